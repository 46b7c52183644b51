/*
 * hr-mem — a memory workload with a known working set, the `mem` workload.
 *
 *   hr-mem MIB HOT_PERCENT STATFILE [TOUCHES_PER_SEC]
 *
 * Maps MIB MiB of anonymous memory and fills every page with a pattern derived from its index
 * (word w of page p holds p * 0x9E3779B97F4A7C15 ^ w), so every page is resident and distinct.
 * Then it loops forever, touching pages: a touch is a read-modify-write of the counter word (word 0)
 * of a random page among the first HOT_PERCENT % of the area, except one touch in 20 that goes to a
 * random page of the whole area. TOUCHES_PER_SEC (default 0 = as fast as possible) paces the loop.
 *
 * Every 200 ms STATFILE is written atomically, one JSON line:
 *   {"mib":N,"hotPercent":N,"touches":N,"rate":N,"passes":N,"uptimeMs":N}
 * rate: touches/s over the last ~1 s; passes: touches / pages in the hot set, i.e. how many times
 * the hot set has been covered on average.
 *
 * Every 50 ms the loop also records (CLOCK_MONOTONIC ms, touches) in a ring of the last 20 s, and
 * with each stat write STATFILE.hist is rewritten: one "ms touches" line per tick, oldest first.
 * After a restore the host reads it to find when the rate came back (time to responsiveness).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hrutil.h"

#define STAT_MS 200
#define TICK_MS 50
#define HIST_TICKS 400
#define COLD_ONE_IN 20

static int64_t hist_at[HIST_TICKS];
static uint64_t hist_touches[HIST_TICKS];
static int hist_count = 0;
static int hist_next = 0;

static void hist_record(int64_t now, uint64_t touches) {
  hist_at[hist_next] = now;
  hist_touches[hist_next] = touches;
  hist_next = (hist_next + 1) % HIST_TICKS;
  if (hist_count < HIST_TICKS) hist_count++;
}

/* STATFILE.hist through a tmp file and rename(2), like the stat line. */
static void hist_write(const char *path) {
  char final[4096], tmp[4096];
  if (snprintf(final, sizeof final, "%s.hist", path) >= (int)sizeof final) return;
  if (snprintf(tmp, sizeof tmp, "%s.hist.tmp", path) >= (int)sizeof tmp) return;
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  int first = hist_count < HIST_TICKS ? 0 : hist_next;
  for (int i = 0; i < hist_count; i++) {
    int at = (first + i) % HIST_TICKS;
    fprintf(f, "%lld %llu\n", (long long)hist_at[at], (unsigned long long)hist_touches[at]);
  }
  if (fclose(f) != 0) return;
  rename(tmp, final);
}

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static uint64_t rng_next(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static long parse_long(const char *text, long min, long max, const char *what) {
  char *end;
  long v = strtol(text, &end, 10);
  if (*end || v < min || v > max) {
    fprintf(stderr, "hr-mem: %s must be %ld..%ld, got '%s'\n", what, min, max, text);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: hr-mem MIB HOT_PERCENT STATFILE [TOUCHES_PER_SEC]\n");
    return 2;
  }
  const long mib = parse_long(argv[1], 1, 1L << 20, "MIB");
  const long hot_percent = parse_long(argv[2], 1, 100, "HOT_PERCENT");
  const char *path = argv[3];
  const long pace = argc == 5 ? parse_long(argv[4], 0, 1L << 40, "TOUCHES_PER_SEC") : 0;

  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t size = (size_t)mib << 20;
  const size_t pages = size / page;
  size_t hot_pages = pages * (size_t)hot_percent / 100;
  if (hot_pages == 0) hot_pages = 1;
  uint8_t *area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (area == MAP_FAILED) {
    perror("hr-mem: mmap");
    return 1;
  }
  const size_t words = page / sizeof(uint64_t);
  for (size_t p = 0; p < pages; p++) {
    uint64_t *w = (uint64_t *)(area + p * page);
    for (size_t i = 0; i < words; i++) w[i] = (uint64_t)p * 0x9E3779B97F4A7C15ULL ^ i;
  }

  const int64_t started = hr_now_ms();
  const int batch = pace > 0 ? (pace / 100 < 1 ? 1 : pace / 100 > 1024 ? 1024 : (int)(pace / 100)) : 1024;
  int64_t next_stat = started;
  int64_t next_tick = started;
  int64_t paced_from = started;
  uint64_t paced_touches = 0;
  uint64_t touches = 0;
  struct hr_rate rate = {0};
  rng_state ^= (uint64_t)getpid() << 17;
  for (;;) {
    for (int i = 0; i < batch; i++) {
      uint64_t r = rng_next();
      size_t target = (r >> 8) % COLD_ONE_IN == 0 ? (size_t)(r >> 16) % pages : (size_t)(r >> 16) % hot_pages;
      volatile uint64_t *counter = (volatile uint64_t *)(area + target * page);
      *counter = *counter + 1;
    }
    touches += (uint64_t)batch;
    paced_touches += (uint64_t)batch;
    int64_t now = hr_now_ms();
    /* Sleep until the touches done so far are due; restart the schedule after a long stall. */
    int64_t due = pace > 0 ? paced_from + (int64_t)(paced_touches * 1000 / (uint64_t)pace) : now;
    if (now - due > 1000) {
      paced_from = now;
      paced_touches = 0;
      due = now;
    }
    for (;;) {
      if (now >= next_tick) {
        next_tick = now + TICK_MS;
        hist_record(now, touches);
      }
      if (now >= next_stat) {
        next_stat = now + STAT_MS;
        uint64_t per_sec = hr_rate_sample(&rate, now, touches);
        char line[512];
        snprintf(line, sizeof line,
                 "{\"mib\":%ld,\"hotPercent\":%ld,\"touches\":%llu,\"rate\":%llu,\"passes\":%llu,"
                 "\"uptimeMs\":%lld}",
                 mib, hot_percent, (unsigned long long)touches, (unsigned long long)per_sec,
                 (unsigned long long)(touches / hot_pages), (long long)(now - started));
        hr_write_stat(path, line);
        hist_write(path);
      }
      if (now >= due) break;
      int64_t until = due < next_stat ? due : next_stat;
      if (next_tick < until) until = next_tick;
      usleep((useconds_t)(until - now) * 1000);
      now = hr_now_ms();
    }
  }
}
