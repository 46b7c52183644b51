/*
 * hr-agent — the in-guest exec agent of HotRestore, spoken to over a virtio-serial port.
 *
 * Port: /dev/virtio-ports/org.hotrestore.agent (found through /sys/class/virtio-ports when no
 * udev made that link; the agent then makes it itself).
 *
 * Frame (all integers big-endian), both directions:
 *   be32 length   length of what follows (type byte + payload), 1..HR_FRAME_MAX
 *   u8   type
 *   ...  payload
 *
 *   host->guest 1 EXEC   be32 id, be32 timeoutMs (0 = none), bytes command
 *   guest->host 2 RESULT be32 id, be32 exitCode (signal N -> 128+N, timeout -> 124),
 *                        u8 flags (bit0 timedOut, bit1 stdoutTruncated, bit2 stderrTruncated),
 *                        be32 stdoutLen, stdout, be32 stderrLen, stderr
 *   host->guest 3 SPAWN  be32 id, bytes command
 *   guest->host 4 SPAWNED be32 id, be32 pid
 *   host->guest 5 PING   be32 id
 *   guest->host 6 PONG   be32 id, bytes hostname
 *   guest->host 7 ERROR  be32 id (0 if unknown), bytes message
 *
 * HR_FRAME_MAX is 16 MiB + 64: a RESULT carrying two full 8 MiB captures fits, and the host
 * decoder (src/vm/agent-protocol.ts) uses the same limit.
 *
 * Concurrency model: one process, one poll() loop, no threads. Every EXEC forks a child
 * (/bin/sh -c, own process group, stdin /dev/null, stdout and stderr on two pipes); the loop reads
 * those pipes, reaps children through a signalfd for SIGCHLD, enforces timeouts (SIGKILL to the
 * whole group), and appends each finished reply, whole, to one output queue that is written to the
 * port as it becomes writable. Frames can therefore never interleave, and PINGs are answered while
 * long EXECs run. When the shell has exited, its pipes are drained for at most DRAIN_MS and the
 * reply is sent even if a background child still holds them open.
 *
 * Host connection: while no host is connected to the QEMU chardev, the guest port reports POLLHUP
 * and read() returns 0. The agent then drops any half-read input and any queued output (they
 * belonged to the previous connection) and looks again every 100 ms. A host that disconnects and
 * reconnects between two looks goes unnoticed, so the stream also resynchronises in-band:
 *  - a bad length gets ERROR id 0, then the agent skips input up to the next PING header
 *    (00 00 00 05 05) and parses from there: a host's PINGs (AgentClient.waitReady) resync it;
 *  - a frame still incomplete PARTIAL_FRAME_MS after its first byte (its writer died mid-frame)
 *    is dropped the same way;
 *  - a frame with a good length but a bad body gets ERROR with its id, and parsing goes on.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.hotrestore.agent"
#define PORT_LINK_DIR "/dev/virtio-ports"
#define PORT_LINK PORT_LINK_DIR "/" PORT_NAME

#define HR_FRAME_MAX (16u * 1024u * 1024u + 64u)
#define CAPTURE_MAX (8u * 1024u * 1024u)
#define MAX_JOBS 64
#define DRAIN_MS 100
#define HUP_RETRY_MS 100
#define PARTIAL_FRAME_MS 10000

enum msg_type {
  MSG_EXEC = 1,
  MSG_RESULT = 2,
  MSG_SPAWN = 3,
  MSG_SPAWNED = 4,
  MSG_PING = 5,
  MSG_PONG = 6,
  MSG_ERROR = 7,
};

enum result_flags { FLAG_TIMED_OUT = 1, FLAG_STDOUT_TRUNC = 2, FLAG_STDERR_TRUNC = 4 };

/* ---------- small helpers ---------- */

static void logmsg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("hr-agent: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    logmsg("out of memory (%zu bytes)", n);
    abort();
  }
  return p;
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* A growable byte buffer. */
struct buf {
  uint8_t *data;
  size_t len;
  size_t cap;
};

static void buf_reserve(struct buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  uint8_t *p = realloc(b->data, cap);
  if (!p) {
    logmsg("out of memory growing buffer to %zu", cap);
    abort();
  }
  b->data = p;
  b->cap = cap;
}

static void buf_append(struct buf *b, const void *src, size_t n) {
  buf_reserve(b, n);
  memcpy(b->data + b->len, src, n);
  b->len += n;
}

static void buf_free(struct buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* ---------- output queue: whole frames, written in order ---------- */

struct frame {
  struct frame *next;
  uint8_t *data;
  size_t len;
  size_t off;
};

static struct frame *out_head, *out_tail;
static int host_connected; /* 0 while the port reports HUP: replies are dropped */

static void out_clear(void) {
  while (out_head) {
    struct frame *f = out_head;
    out_head = f->next;
    free(f->data);
    free(f);
  }
  out_tail = NULL;
}

/* Queue one frame: header (length, type) + up to three payload pieces. Takes no ownership. */
static void out_frame(uint8_t type, const void *a, size_t alen, const void *b, size_t blen, const void *c,
                      size_t clen) {
  if (!host_connected) return;
  size_t body = 1 + alen + blen + clen;
  struct frame *f = xmalloc(sizeof *f);
  f->data = xmalloc(4 + body);
  f->len = 4 + body;
  f->off = 0;
  f->next = NULL;
  put_be32(f->data, (uint32_t)body);
  f->data[4] = type;
  uint8_t *p = f->data + 5;
  if (alen) memcpy(p, a, alen);
  p += alen;
  if (blen) memcpy(p, b, blen);
  p += blen;
  if (clen) memcpy(p, c, clen);
  if (out_tail)
    out_tail->next = f;
  else
    out_head = f;
  out_tail = f;
}

static void send_error(uint32_t id, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  uint8_t head[4];
  put_be32(head, id);
  out_frame(MSG_ERROR, head, 4, msg, strlen(msg), NULL, 0);
}

/* Write what the port accepts now. Returns -1 when the host went away. */
static int out_flush(int port) {
  while (out_head) {
    struct frame *f = out_head;
    ssize_t n = write(port, f->data + f->off, f->len - f->off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;
    }
    f->off += (size_t)n;
    if (f->off < f->len) continue;
    out_head = f->next;
    if (!out_head) out_tail = NULL;
    free(f->data);
    free(f);
  }
  return 0;
}

/* ---------- jobs (EXEC) ---------- */

struct capture {
  int fd; /* -1 once EOF or closed */
  struct buf data;
  int truncated;
};

struct job {
  int used;
  uint32_t id;
  pid_t pid; /* 0 once reaped */
  int exit_code;
  int timed_out;
  int64_t deadline;    /* 0 = no timeout */
  int64_t drain_until; /* set when the shell has exited */
  struct capture out, err;
};

static struct job jobs[MAX_JOBS];

static void capture_read(struct capture *c) {
  uint8_t chunk[65536];
  for (;;) {
    ssize_t n = read(c->fd, chunk, sizeof chunk);
    if (n > 0) {
      size_t room = c->data.len < CAPTURE_MAX ? CAPTURE_MAX - c->data.len : 0;
      size_t keep = (size_t)n < room ? (size_t)n : room;
      if (keep) buf_append(&c->data, chunk, keep);
      if (keep < (size_t)n) c->truncated = 1;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    close(c->fd); /* EOF or a real error */
    c->fd = -1;
    return;
  }
}

static void job_finish(struct job *j) {
  for (struct capture *c = &j->out; c <= &j->err; c++) {
    if (c->fd >= 0) {
      capture_read(c);
      if (c->fd >= 0) close(c->fd);
      c->fd = -1;
    }
  }
  uint8_t head[9], olen[4], elen[4];
  put_be32(head, j->id);
  put_be32(head + 4, (uint32_t)j->exit_code);
  head[8] = (uint8_t)((j->timed_out ? FLAG_TIMED_OUT : 0) | (j->out.truncated ? FLAG_STDOUT_TRUNC : 0) |
                      (j->err.truncated ? FLAG_STDERR_TRUNC : 0));
  put_be32(olen, (uint32_t)j->out.data.len);
  put_be32(elen, (uint32_t)j->err.data.len);
  /* RESULT = head, stdoutLen, stdout, stderrLen, stderr: assemble into one buffer. */
  struct buf body = {0};
  buf_append(&body, head, sizeof head);
  buf_append(&body, olen, 4);
  if (j->out.data.len) buf_append(&body, j->out.data.data, j->out.data.len);
  buf_append(&body, elen, 4);
  if (j->err.data.len) buf_append(&body, j->err.data.data, j->err.data.len);
  out_frame(MSG_RESULT, body.data, body.len, NULL, 0, NULL, 0);
  buf_free(&body);
  buf_free(&j->out.data);
  buf_free(&j->err.data);
  j->used = 0;
}

static sigset_t blocked_signals;

/* Runs in the child between fork and exec. Never returns. */
static void exec_shell(const char *command, int in_fd, int out_fd, int err_fd) {
  sigprocmask(SIG_UNBLOCK, &blocked_signals, NULL);
  signal(SIGPIPE, SIG_DFL);
  if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(127);
  for (int fd = 3; fd < 1024; fd++) close(fd);
  execl("/bin/sh", "sh", "-c", command, (char *)NULL);
  _exit(127);
}

static void start_exec(uint32_t id, uint32_t timeout_ms, const char *command) {
  struct job *j = NULL;
  for (int i = 0; i < MAX_JOBS; i++) {
    if (!jobs[i].used) {
      j = &jobs[i];
      break;
    }
  }
  if (!j) {
    send_error(id, "too many commands in flight (%d)", MAX_JOBS);
    return;
  }
  int outp[2], errp[2];
  if (pipe2(outp, O_CLOEXEC) < 0) {
    send_error(id, "pipe: %s", strerror(errno));
    return;
  }
  if (pipe2(errp, O_CLOEXEC) < 0) {
    send_error(id, "pipe: %s", strerror(errno));
    close(outp[0]);
    close(outp[1]);
    return;
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    exec_shell(command, devnull, outp[1], errp[1]);
  }
  int fork_errno = errno;
  close(outp[1]);
  close(errp[1]);
  if (devnull >= 0) close(devnull);
  if (pid < 0) {
    close(outp[0]);
    close(errp[0]);
    send_error(id, "fork: %s", strerror(fork_errno));
    return;
  }
  setpgid(pid, pid); /* also from the parent, so a timeout kill never misses the group */
  set_nonblock(outp[0]);
  set_nonblock(errp[0]);
  memset(j, 0, sizeof *j);
  j->used = 1;
  j->id = id;
  j->pid = pid;
  j->deadline = timeout_ms ? now_ms() + timeout_ms : 0;
  j->out.fd = outp[0];
  j->err.fd = errp[0];
}

static void start_spawn(uint32_t id, const char *command) {
  pid_t pid = fork();
  if (pid == 0) {
    setsid();
    int devnull = open("/dev/null", O_RDWR);
    if (devnull < 0) _exit(127);
    exec_shell(command, devnull, devnull, devnull);
  }
  if (pid < 0) {
    send_error(id, "fork: %s", strerror(errno));
    return;
  }
  uint8_t body[8];
  put_be32(body, id);
  put_be32(body + 4, (uint32_t)pid);
  out_frame(MSG_SPAWNED, body, sizeof body, NULL, 0, NULL, 0);
}

static void reap_children(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *j = &jobs[i];
      if (!j->used || j->pid != pid) continue;
      j->pid = 0;
      if (!j->timed_out) {
        if (WIFEXITED(status))
          j->exit_code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
          j->exit_code = 128 + WTERMSIG(status);
        else
          j->exit_code = 255;
      }
      j->drain_until = now_ms() + DRAIN_MS;
    }
    /* Unknown pids are SPAWNed processes (or their orphans): reaping them is all we owe them. */
  }
}

/* ---------- input decoding ---------- */

static struct buf in;          /* bytes received, not yet parsed */
static int resync;             /* after a framing error: skip to the next PING header */
static int64_t partial_since;  /* when the first byte of the incomplete frame in `in` arrived */
static const uint8_t ping_header[5] = {0, 0, 0, 5, MSG_PING};

/* In resync mode: find a PING header in in[off..]. Returns the new offset (the header's, or the
 * end of the buffer less a possible partial header) and leaves resync mode when found. */
static size_t skip_to_ping(size_t off) {
  for (size_t i = off; i + sizeof ping_header <= in.len; i++) {
    if (memcmp(in.data + i, ping_header, sizeof ping_header) == 0) {
      resync = 0;
      return i;
    }
  }
  size_t keep = sizeof ping_header - 1;
  return in.len - off > keep ? in.len - keep : off;
}

static void handle_frame(uint8_t type, const uint8_t *p, size_t n) {
  uint32_t id = n >= 4 ? get_be32(p) : 0;
  switch (type) {
    case MSG_EXEC:
    case MSG_SPAWN: {
      size_t head = type == MSG_EXEC ? 8 : 4;
      if (n < head) {
        send_error(id, "%s frame too short (%zu bytes)", type == MSG_EXEC ? "EXEC" : "SPAWN", n);
        return;
      }
      if (memchr(p + head, 0, n - head)) {
        send_error(id, "command contains a NUL byte");
        return;
      }
      char *command = xmalloc(n - head + 1);
      memcpy(command, p + head, n - head);
      command[n - head] = 0;
      if (type == MSG_EXEC)
        start_exec(id, get_be32(p + 4), command);
      else
        start_spawn(id, command);
      free(command);
      return;
    }
    case MSG_PING: {
      if (n != 4) {
        send_error(id, "PING frame must carry 4 bytes, got %zu", n);
        return;
      }
      char host[256] = "";
      gethostname(host, sizeof host - 1);
      uint8_t body[4];
      put_be32(body, id);
      out_frame(MSG_PONG, body, 4, host, strlen(host), NULL, 0);
      return;
    }
    default:
      send_error(id, "unknown frame type %u", (unsigned)type);
      return;
  }
}

static void parse_input(void) {
  size_t off = 0;
  int completed = 0;
  for (;;) {
    if (resync) {
      off = skip_to_ping(off);
      if (resync) break;
    }
    if (in.len - off < 4) break;
    uint32_t len = get_be32(in.data + off);
    if (len == 0 || len > HR_FRAME_MAX) {
      send_error(0, "bad frame length %u (allowed 1..%u); skipping input to the next PING", len, HR_FRAME_MAX);
      resync = 1;
      off += 1;
      continue;
    }
    if (in.len - off - 4 < len) break;
    handle_frame(in.data[off + 4], in.data + off + 5, len - 1);
    off += 4 + (size_t)len;
    completed = 1;
  }
  if (off == in.len) {
    in.len = 0;
    if (in.cap > 1024 * 1024) buf_free(&in); /* do not keep a 16 MiB buffer around */
  } else if (off > 0) {
    memmove(in.data, in.data + off, in.len - off);
    in.len -= off;
  }
  if (in.len == 0 || resync)
    partial_since = 0;
  else if (completed || partial_since == 0)
    partial_since = now_ms();
}

/* A frame whose writer died mid-way never completes: give up on it and resync. */
static void check_partial_frame(int64_t now) {
  if (!partial_since || now - partial_since < PARTIAL_FRAME_MS) return;
  send_error(0, "incomplete frame (%zu bytes) abandoned after %d ms; skipping input to the next PING", in.len,
             PARTIAL_FRAME_MS);
  in.len = 0;
  partial_since = 0;
  resync = 1;
}

/* Returns 1 when data was read, 0 when nothing is there, -1 on HUP / EOF. */
static int read_port(int port) {
  uint8_t chunk[65536];
  int got = 0;
  for (;;) {
    ssize_t n = read(port, chunk, sizeof chunk);
    if (n > 0) {
      got = 1;
      host_connected = 1; /* data means a host is there: replies to it must not be dropped */
      buf_append(&in, chunk, (size_t)n);
      parse_input();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return got;
    return got ? 1 : -1; /* 0 bytes: the host is not connected */
  }
}

/* ---------- port discovery ---------- */

static int find_port_device(char *path, size_t size) {
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) return -1;
  struct dirent *e;
  int found = -1;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char name_path[512], name[128] = "";
    snprintf(name_path, sizeof name_path, "/sys/class/virtio-ports/%s/name", e->d_name);
    FILE *f = fopen(name_path, "r");
    if (!f) continue;
    if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
    fclose(f);
    if (strcmp(name, PORT_NAME) == 0) {
      snprintf(path, size, "/dev/%s", e->d_name);
      found = 0;
      break;
    }
  }
  closedir(d);
  return found;
}

static int open_port(void) {
  int64_t started = now_ms();
  int warned = 0;
  const char *override = getenv("HR_AGENT_DEVICE"); /* for debugging on a pty or a fifo */
  if (override && *override) {
    int fd = open(override, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      logmsg("open %s: %s", override, strerror(errno));
      exit(1);
    }
    return fd;
  }
  for (;;) {
    int fd = open(PORT_LINK, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) return fd;
    char dev[300];
    if (find_port_device(dev, sizeof dev) == 0) {
      fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
      if (fd >= 0) {
        mkdir(PORT_LINK_DIR, 0755);
        char target[320];
        snprintf(target, sizeof target, "../%s", dev + strlen("/dev/"));
        if (symlink(target, PORT_LINK) < 0 && errno != EEXIST) logmsg("symlink %s: %s", PORT_LINK, strerror(errno));
        return fd;
      }
    }
    if (!warned && now_ms() - started > 10000) {
      logmsg("waiting for virtio-serial port %s (is -device virtserialport,name=%s present?)", PORT_NAME,
             PORT_NAME);
      warned = 1;
    }
    usleep(100 * 1000);
  }
}

/* ---------- main loop ---------- */

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&blocked_signals);
  sigaddset(&blocked_signals, SIGCHLD);
  sigprocmask(SIG_BLOCK, &blocked_signals, NULL);
  int sfd = signalfd(-1, &blocked_signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    logmsg("signalfd: %s", strerror(errno));
    return 1;
  }
  int port = open_port();
  host_connected = 1; /* assume so; the first read or poll tells otherwise */
  int64_t hup_until = 0;

  for (;;) {
    struct pollfd fds[2 + 2 * MAX_JOBS];
    struct capture *caps[2 + 2 * MAX_JOBS];
    nfds_t nfds = 0;
    int64_t now = now_ms();
    int64_t wake = now + 1000;

    fds[nfds].fd = sfd;
    fds[nfds].events = POLLIN;
    caps[nfds++] = NULL;
    int port_slot = -1;
    if (now >= hup_until) {
      port_slot = (int)nfds;
      fds[nfds].fd = port;
      fds[nfds].events = POLLIN | (out_head ? POLLOUT : 0);
      caps[nfds++] = NULL;
    } else if (hup_until < wake) {
      wake = hup_until;
    }
    if (partial_since && partial_since + PARTIAL_FRAME_MS < wake) wake = partial_since + PARTIAL_FRAME_MS;
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *j = &jobs[i];
      if (!j->used) continue;
      for (struct capture *c = &j->out; c <= &j->err; c++) {
        if (c->fd < 0) continue;
        fds[nfds].fd = c->fd;
        fds[nfds].events = POLLIN;
        caps[nfds++] = c;
      }
      if (j->pid && j->deadline && j->deadline < wake) wake = j->deadline;
      if (!j->pid && j->drain_until < wake) wake = j->drain_until;
    }
    int timeout = wake > now ? (int)(wake - now) : 0;
    int ready = poll(fds, nfds, timeout);
    if (ready < 0 && errno != EINTR) {
      logmsg("poll: %s", strerror(errno));
      usleep(100 * 1000);
      continue;
    }
    now = now_ms();

    if (ready > 0) {
      for (nfds_t k = 0; k < nfds; k++) {
        if (caps[k] && fds[k].revents) capture_read(caps[k]);
      }
      if (fds[0].revents & POLLIN) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        }
      }
      if (port_slot >= 0) {
        short rev = fds[port_slot].revents;
        int state = (rev & (POLLIN | POLLHUP | POLLERR)) ? read_port(port) : 0;
        if (state < 0 || ((rev & POLLHUP) && !(rev & POLLIN))) {
          /* No host on the other end: forget this connection's half frames and replies. */
          host_connected = 0;
          out_clear();
          in.len = 0;
          resync = 0;
          partial_since = 0;
          hup_until = now + HUP_RETRY_MS;
        } else {
          host_connected = 1;
        }
      }
    } else if (ready == 0 && port_slot >= 0) {
      host_connected = 1; /* polled and not even HUP: a host is connected */
    }

    check_partial_frame(now);

    reap_children();
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *j = &jobs[i];
      if (!j->used) continue;
      if (j->pid && j->deadline && now >= j->deadline) {
        j->timed_out = 1;
        j->exit_code = 124;
        kill(-j->pid, SIGKILL);
        kill(j->pid, SIGKILL);
        j->deadline = 0;
      }
      if (!j->pid && (now >= j->drain_until || (j->out.fd < 0 && j->err.fd < 0))) job_finish(j);
    }
    if (host_connected && out_head && out_flush(port) < 0) {
      host_connected = 0;
      out_clear();
      hup_until = now + HUP_RETRY_MS;
    }
  }
}
