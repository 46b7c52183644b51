#!/usr/bin/env bash
# Builds the HotRestore guest image into OUT_DIR from an extracted Debian kernel package.
#
#   bash guest/build.sh KERNEL_PKG_DIR OUT_DIR INPUTS_HASH
#
# KERNEL_PKG_DIR: `dpkg -x` of linux-image-<version>-amd64 (boot/vmlinuz-*, lib/modules/<version>/).
# OUT_DIR (must not exist yet; scripts/setup.sh moves it into place afterwards) receives:
#   vmlinuz             the kernel
#   initramfs.cpio.gz   busybox-static (applets as symlinks in /bin), the modules in /lib/modules
#                       with their load order in /lib/modules/order (always) and order.disk
#                       (with hr.disk=1), /init (guest/init), and our
#                       static programs /bin/hr-agent, /bin/hr-stream, /bin/hr-mem
#   guest.json          kernel version, inputs hash, modules, programs
# Needs: gcc + libc6-dev (static), busybox (busybox-static), gzip; xz or zstd only when the
# kernel ships compressed modules.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kpkg=${1:?usage: build.sh KERNEL_PKG_DIR OUT_DIR INPUTS_HASH}
out=${2:?usage: build.sh KERNEL_PKG_DIR OUT_DIR INPUTS_HASH}
inputs_hash=${3:?usage: build.sh KERNEL_PKG_DIR OUT_DIR INPUTS_HASH}

# The modules the guest needs; their dependencies are added from each module's own
# `depends=` field (the package ships no modules.dep).
#   virtio_pci: the PCI transport; virtio_net: eth0; virtio_console: virtio-serial, the agent's
#   port; virtio_rng: with `-device virtio-rng-pci` the kernel's random pool is ready in a few ms
#   instead of seconds of jitter-entropy collection under TCG, which mke2fs (reading /dev/urandom
#   for the filesystem UUID) would otherwise wait for on a blank data disk; harmless without it.
# Disk modules, loaded by /init only with hr.disk=1 (ext4 alone takes ~0.5 s to load under TCG):
#   virtio_blk: /dev/vda; ext4 (it also mounts ext2) + crc32c_generic, which ext4/jbd2 request as
#   crypto-crc32c through a soft dependency that nothing would load for us.
base_modules=(virtio_pci virtio_net virtio_console virtio_rng)
disk_modules=(virtio_blk crc32c_generic ext4)

die() {
  echo "build.sh: $*" >&2
  exit 1
}
trap 'echo "build.sh: command failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

[ -d "$kpkg/lib/modules" ] || die "$kpkg has no lib/modules: not an extracted kernel package"
kernel_dirs=("$kpkg"/lib/modules/*)
[ -d "${kernel_dirs[0]}" ] || die "$kpkg/lib/modules is empty"
kver=${kernel_dirs[0]##*/}
moddir=$kpkg/lib/modules/$kver
vmlinuz=$kpkg/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "no $vmlinuz"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found (install busybox-static)"

[ ! -e "$out" ] || die "$out already exists"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/hr-guest-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,etc,lib/modules,proc,sys,run,tmp,data}

# --- our static programs
programs=(hr-agent hr-stream hr-mem hr-clock)
for prog in "${programs[@]}"; do
  gcc -static -O2 -Wall -Wextra -s -o "$root/bin/$prog" "$here/src/$prog.c" || die "compiling $prog failed"
done

# --- busybox and its applets
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  case "$applet" in busybox | hr-*) continue ;; esac
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp "$here/init" "$root/init"
chmod 755 "$root/init"

# --- kernel modules, dependencies first
declare -A module_path=() module_done=()
while IFS= read -r -d '' file; do
  base=${file##*/}
  base=${base%%.ko*}
  module_path[${base//-/_}]=$file
done < <(find "$moddir/kernel" -name '*.ko*' -print0)

module_field() { # module_field FILE FIELD -> value of FIELD= in the .modinfo strings
  local file=$1 field=$2
  case "$file" in
    *.ko.xz) xz -dc "$file" ;;
    *.ko.zst) zstd -dcq "$file" ;;
    *.ko.gz) gzip -dc "$file" ;;
    *) cat "$file" ;;
  esac | tr '\0' '\n' | sed -n "s/^$field=//p" | sed -n 1p # (no early exit: pipefail + SIGPIPE)
}

order=() # filled by add_module: dependencies first
add_module() {
  local name=${1//-/_}
  [ -z "${module_done[$name]:-}" ] || return 0
  module_done[$name]=visiting
  local file=${module_path[$name]:-}
  [ -n "$file" ] || die "module $name not found under $moddir (is it built in? check boot/config-$kver)"
  local deps dep
  deps=$(module_field "$file" depends)
  for dep in ${deps//,/ }; do
    [ "${module_done[${dep//-/_}]:-}" != visiting ] || die "module dependency cycle at $dep"
    add_module "$dep"
  done
  module_done[$name]=done
  order+=("$name")
  case "$file" in
    *.ko.xz) xz -dc "$file" >"$root/lib/modules/$name.ko" ;;
    *.ko.zst) zstd -dcq "$file" >"$root/lib/modules/$name.ko" ;;
    *.ko.gz) gzip -dc "$file" >"$root/lib/modules/$name.ko" ;;
    *) cp "$file" "$root/lib/modules/$name.ko" ;;
  esac
}
for module in "${base_modules[@]}"; do add_module "$module"; done
base_order=("${order[@]}")
order=()
for module in "${disk_modules[@]}"; do add_module "$module"; done
disk_order=("${order[@]}")
printf '%s\n' "${base_order[@]}" >"$root/lib/modules/order"
printf '%s\n' "${disk_order[@]}" >"$root/lib/modules/order.disk"

# --- initramfs: a first archive with /dev and /dev/console (the kernel opens the console before
# /init runs; a device node needs no root privileges when written by hand), then everything else.
cpio_entry() { # cpio_entry NAME MODE_HEX RDEV_MAJOR RDEV_MINOR: a newc header + name, no data
  local name=$1 mode=$2 major=$3 minor=$4 ino=$5
  local namesize=$((${#name} + 1))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    "$ino" "$((16#$mode))" 0 0 1 0 0 0 0 "$major" "$minor" "$namesize" 0
  printf '%s\0' "$name"
  local pad=$(((4 - (110 + namesize) % 4) % 4))
  head -c "$pad" /dev/zero
}
{
  cpio_entry dev 41ED 0 0 1
  cpio_entry dev/console 2180 5 1 2
  cpio_entry 'TRAILER!!!' 0 0 0 0
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null)
} | gzip -9 >"$out/initramfs.cpio.gz"
cp "$vmlinuz" "$out/vmlinuz"

json_list() {
  local first=1 item
  printf '['
  for item in "$@"; do
    [ $first = 1 ] || printf ','
    printf '"%s"' "$item"
    first=0
  done
  printf ']'
}
kpkg_name=$(cat "$kpkg/.package" 2>/dev/null || echo "linux-image-$kver")
kpkg_version=$(cat "$kpkg/.version" 2>/dev/null || echo unknown)
busybox_version=$("$busybox" 2>&1 | sed -n '1s/^BusyBox \(v[^ ]*\).*/\1/p' || true)
cat >"$out/guest.json" <<EOF
{
  "format": 1,
  "kernelVersion": "$kver",
  "kernelPackage": "$kpkg_name",
  "kernelPackageVersion": "$kpkg_version",
  "busyboxVersion": "$busybox_version",
  "inputsHash": "$inputs_hash",
  "modules": $(json_list "${base_order[@]}"),
  "diskModules": $(json_list "${disk_order[@]}"),
  "programs": $(json_list "${programs[@]}"),
  "agentPort": "org.hotrestore.agent",
  "initramfsBytes": $(stat -c %s "$out/initramfs.cpio.gz"),
  "builtAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
