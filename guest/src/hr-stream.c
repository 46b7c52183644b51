/*
 * hr-stream — a sequence-numbered TCP flow, the `tcp-stream` workload.
 *
 *   hr-stream recv PORT STATFILE
 *   hr-stream send HOST PORT RATE_KIBPS STATFILE      (RATE_KIBPS 0 = as fast as the socket takes)
 *
 * Record: 64 bytes = be64 seq + 56 filler bytes (the low byte of seq, repeated).
 * The receiver listens on PORT (SO_REUSEADDR), serves one connection at a time (a new connection
 * replaces the old), checks seq == previous + 1 inside a connection (the first record of a
 * connection may carry any seq) and counts the misses in seqErrors.
 * The sender resolves HOST through /etc/hosts (or takes a dotted address), connects (retrying
 * every 200 ms), and sends whole records paced in bursts every 10 ms (the records due in a burst
 * go out in one send(): one syscall per 64-byte record is more CPU than a TCG guest has); seq
 * continues across reconnects, a record cut by a broken connection is sent again whole on the
 * next one.
 *
 * Every 200 ms both write STATFILE atomically, one JSON line:
 *   {"role":"send","peer":"db","port":7001,"seq":N,"bytes":N,"connects":N,"seqErrors":N,
 *    "rateBps":N,"maxGapMs":N,"lastGapMs":N,"uptimeMs":N}
 * seq: next seq to send (send) or last seq received (recv); connects: connections made (send) or
 * accepted (recv); rateBps: bytes/s over the last ~1 s; maxGapMs: longest interval between two
 * consecutive successful writes (send) or reads (recv); lastGapMs: time since the last one.
 * peer is HOST for the sender, the address of the current connection ("" if none) for the receiver.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hrutil.h"

#define RECORD 64
#define BATCH_RECORDS 1024 /* 64 KiB */
#define TICK_MS 10
#define STAT_MS 200
#define RETRY_MS 200
#define CONNECT_TIMEOUT_MS 1000

struct stats {
  const char *role;
  char peer[256];
  int port;
  uint64_t seq;
  uint64_t bytes;
  uint64_t connects;
  uint64_t seq_errors;
  int64_t max_gap;
  int64_t last_progress; /* 0 = none yet */
  int64_t started;
  int64_t next_stat;
  struct hr_rate rate;
  const char *path;
};

static void die(const char *msg) {
  fprintf(stderr, "hr-stream: %s\n", msg);
  exit(2);
}

static void progress(struct stats *s, int64_t now, size_t n) {
  if (s->last_progress && now - s->last_progress > s->max_gap) s->max_gap = now - s->last_progress;
  s->last_progress = now;
  s->bytes += n;
}

static void maybe_write_stats(struct stats *s, int64_t now) {
  if (now < s->next_stat) return;
  s->next_stat = now + STAT_MS;
  uint64_t rate = hr_rate_sample(&s->rate, now, s->bytes);
  int64_t last_gap = now - (s->last_progress ? s->last_progress : s->started);
  char line[1024];
  snprintf(line, sizeof line,
           "{\"role\":\"%s\",\"peer\":\"%s\",\"port\":%d,\"seq\":%llu,\"bytes\":%llu,\"connects\":%llu,"
           "\"seqErrors\":%llu,\"rateBps\":%llu,\"maxGapMs\":%lld,\"lastGapMs\":%lld,\"uptimeMs\":%lld}",
           s->role, s->peer, s->port, (unsigned long long)s->seq, (unsigned long long)s->bytes,
           (unsigned long long)s->connects, (unsigned long long)s->seq_errors, (unsigned long long)rate,
           (long long)s->max_gap, (long long)last_gap, (long long)(now - s->started));
  hr_write_stat(s->path, line);
}

static int parse_port(const char *text) {
  char *end;
  long port = strtol(text, &end, 10);
  if (*end || port < 1 || port > 65535) die("PORT must be 1..65535");
  return (int)port;
}

/* ---------- recv ---------- */

static int run_recv(int port, const char *path) {
  struct stats s = {.role = "recv", .port = port, .path = path};
  s.started = hr_now_ms();
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket failed");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("hr-stream: bind");
    return 1;
  }
  if (listen(lfd, 4) < 0) die("listen failed");

  int cfd = -1;
  uint8_t rec[RECORD];
  size_t have = 0;  /* bytes of the current record received */
  int first = 1;    /* first record of this connection */
  for (;;) {
    int64_t now = hr_now_ms();
    maybe_write_stats(&s, now);
    struct pollfd fds[2] = {{.fd = lfd, .events = POLLIN}, {.fd = cfd, .events = POLLIN}};
    int wait = (int)(s.next_stat - now);
    poll(fds, cfd >= 0 ? 2 : 1, wait > 0 ? wait : 0);
    if (fds[0].revents & POLLIN) {
      struct sockaddr_in peer;
      socklen_t plen = sizeof peer;
      int nfd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (nfd >= 0) {
        if (cfd >= 0) close(cfd);
        cfd = nfd;
        have = 0;
        first = 1;
        s.connects++;
        inet_ntop(AF_INET, &peer.sin_addr, s.peer, sizeof s.peer);
      }
    }
    if (cfd < 0 || !(fds[1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    uint8_t chunk[65536];
    for (;;) {
      ssize_t n = read(cfd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) { /* EOF or reset: wait for the next connection */
        close(cfd);
        cfd = -1;
        s.peer[0] = 0;
        break;
      }
      progress(&s, hr_now_ms(), (size_t)n);
      for (ssize_t i = 0; i < n;) {
        size_t take = RECORD - have;
        if ((size_t)(n - i) < take) take = (size_t)(n - i);
        memcpy(rec + have, chunk + i, take);
        have += take;
        i += (ssize_t)take;
        if (have < RECORD) break;
        have = 0;
        uint64_t seq = 0;
        for (int b = 0; b < 8; b++) seq = (seq << 8) | rec[b];
        if (!first && seq != s.seq + 1) s.seq_errors++;
        first = 0;
        s.seq = seq;
      }
    }
  }
}

/* ---------- send ---------- */

/* HOST as a dotted address, else the first /etc/hosts line that names it. */
static int resolve_host(const char *host, struct in_addr *out) {
  if (inet_aton(host, out)) return 0;
  FILE *f = fopen("/etc/hosts", "r");
  if (!f) return -1;
  char line[1024];
  int found = -1;
  while (found < 0 && fgets(line, sizeof line, f)) {
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *save = NULL;
    char *addr = strtok_r(line, " \t\r\n", &save);
    if (!addr) continue;
    struct in_addr candidate;
    if (!inet_aton(addr, &candidate)) continue; /* IPv6 or junk */
    for (char *name = strtok_r(NULL, " \t\r\n", &save); name; name = strtok_r(NULL, " \t\r\n", &save)) {
      if (strcmp(name, host) == 0) {
        *out = candidate;
        found = 0;
        break;
      }
    }
  }
  fclose(f);
  return found;
}

/* Connects with a timeout; returns the fd or -1. Keeps the stat file fresh meanwhile. */
static int connect_once(struct stats *s, const char *host, int port) {
  struct in_addr ip;
  if (resolve_host(host, &ip) < 0) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = ip};
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
  if (errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  int64_t deadline = hr_now_ms() + CONNECT_TIMEOUT_MS;
  for (;;) {
    int64_t now = hr_now_ms();
    maybe_write_stats(s, now);
    if (now >= deadline) break;
    int wait = (int)((s->next_stat < deadline ? s->next_stat : deadline) - now);
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, wait > 0 ? wait : 0) <= 0) continue;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == 0) return fd;
    break;
  }
  close(fd);
  return -1;
}

static void sleep_with_stats(struct stats *s, int ms) {
  int64_t until = hr_now_ms() + ms;
  for (;;) {
    int64_t now = hr_now_ms();
    maybe_write_stats(s, now);
    if (now >= until) return;
    int64_t next = s->next_stat < until ? s->next_stat : until;
    poll(NULL, 0, (int)(next - now));
  }
}

static int run_send(const char *host, int port, uint64_t rate_kibps, const char *path) {
  struct stats s = {.role = "send", .port = port, .path = path};
  snprintf(s.peer, sizeof s.peer, "%s", host);
  s.started = hr_now_ms();
  const uint64_t rate = rate_kibps * 1024; /* bytes per second, 0 = unlimited */
  const double burst_cap = rate ? (double)rate / 20 + RECORD : 0; /* at most 50 ms of backlog */

  /* The records due in one tick go out in one send(): one syscall and one segment per record
   * would cost more CPU than a TCG guest has. batch[0..len) holds records batch_seq, ...;
   * batch[0..off) is already written. s.seq is the first record not completely written. */
  static uint8_t batch[BATCH_RECORDS * RECORD];
  size_t len = 0, off = 0;
  uint64_t batch_seq = 0;
  double allowance = 0;
  int64_t last_tick = hr_now_ms();
  for (;;) {
    int fd = connect_once(&s, host, port);
    if (fd < 0) {
      sleep_with_stats(&s, RETRY_MS);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s.connects++;
    off -= off % RECORD; /* a record cut by the old connection goes again whole */
    last_tick = hr_now_ms();
    int broken = 0;
    while (!broken) {
      int64_t now = hr_now_ms();
      maybe_write_stats(&s, now);
      if (rate) {
        allowance += (double)rate * (double)(now - last_tick) / 1000.0;
        if (allowance > burst_cap) allowance = burst_cap;
      }
      last_tick = now;
      if (off == len) { /* batch done: make the next one from what is due */
        size_t due = rate ? (size_t)(allowance / RECORD) : BATCH_RECORDS;
        if (due > BATCH_RECORDS) due = BATCH_RECORDS;
        batch_seq = s.seq;
        for (size_t r = 0; r < due; r++) {
          uint8_t *rec = batch + r * RECORD;
          uint64_t seq = batch_seq + r;
          for (int b = 0; b < 8; b++) rec[b] = (uint8_t)(seq >> (56 - 8 * b));
          memset(rec + 8, (int)(seq & 0xff), RECORD - 8);
        }
        len = due * RECORD;
        off = 0;
        if (rate) allowance -= (double)len;
      }
      int blocked = 0;
      while (off < len) {
        ssize_t n = send(fd, batch + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
          progress(&s, hr_now_ms(), (size_t)n);
          off += (size_t)n;
          s.seq = batch_seq + off / RECORD;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) blocked = 1;
        else broken = 1;
        break;
      }
      if (broken) break;
      if (!rate && !blocked) continue; /* unlimited and the socket still takes more */
      /* Wait for the next tick, for room in the socket, or for the connection to break. */
      struct pollfd p = {.fd = fd, .events = blocked ? POLLOUT : 0};
      int64_t next = now + TICK_MS;
      if (s.next_stat < next) next = s.next_stat;
      int wait = (int)(next - hr_now_ms());
      if (poll(&p, 1, wait > 0 ? wait : 0) > 0 && (p.revents & (POLLERR | POLLHUP))) broken = 1;
    }
    close(fd);
    sleep_with_stats(&s, RETRY_MS);
  }
  return 0; /* not reached */
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 4 && strcmp(argv[1], "recv") == 0) return run_recv(parse_port(argv[2]), argv[3]);
  if (argc == 6 && strcmp(argv[1], "send") == 0) {
    char *end;
    unsigned long long kib = strtoull(argv[4], &end, 10);
    if (*end) die("RATE_KIBPS must be a whole number");
    return run_send(argv[2], parse_port(argv[3]), kib, argv[5]);
  }
  fprintf(stderr,
          "usage: hr-stream recv PORT STATFILE\n"
          "       hr-stream send HOST PORT RATE_KIBPS STATFILE   (RATE_KIBPS 0 = unlimited)\n");
  return 2;
}
