/*
 * qemu-no-thp.so — LD_PRELOADed into a QEMU whose guest RAM is a kernel-paged file
 * (hotrestore --paging kernel, src/restore/vm/kernel-paged.ts).
 *
 * QEMU madvises every RAM block MADV_HUGEPAGE (physmem.c, ram_block_add), with no option to
 * leave it out. On a file mapping that flag makes the kernel's fault path read the 2 MiB around
 * a page-cache miss (filemap.c, do_sync_mmap_readahead, VM_HUGEPAGE branch) whatever the file
 * system's read-ahead is: a guest touching one page not filled yet waits for 512 checked pages
 * from our FUSE worker. PR_SET_THP_DISABLE does not stop that branch. This shim makes
 * MADV_HUGEPAGE a no-op for the whole process and passes every other advice on, so a miss reads
 * the page the guest touched.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int madvise(void *addr, size_t length, int advice) {
  if (advice == MADV_HUGEPAGE) return 0;
  return (int)syscall(SYS_madvise, addr, length, advice);
}
