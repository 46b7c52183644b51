/*
 * Helpers shared by the guest workloads (hr-stream, hr-mem): a monotonic clock, a rate over the
 * last second, and the atomic stat-file write (tmp file + rename, so a reader never sees half a
 * line).
 */
#ifndef HRUTIL_H
#define HRUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static inline int64_t hr_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes `line` plus a newline to `path` through `path.tmp` and rename(2). Errors are ignored:
 * a workload keeps running even when its stat file cannot be written. */
static inline void hr_write_stat(const char *path, const char *line) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  fputs(line, f);
  fputc('\n', f);
  if (fclose(f) != 0) return;
  rename(tmp, path);
}

/* A counter sampled every stat tick; rate() is the increase per second over the last ~1 s. */
#define HR_RATE_SAMPLES 6
struct hr_rate {
  int64_t at[HR_RATE_SAMPLES];
  uint64_t value[HR_RATE_SAMPLES];
  int count;
  int next;
};

static inline uint64_t hr_rate_sample(struct hr_rate *r, int64_t now, uint64_t value) {
  r->at[r->next] = now;
  r->value[r->next] = value;
  r->next = (r->next + 1) % HR_RATE_SAMPLES;
  if (r->count < HR_RATE_SAMPLES) r->count++;
  int oldest = r->count < HR_RATE_SAMPLES ? 0 : r->next;
  int64_t span = now - r->at[oldest];
  if (span <= 0) return 0;
  return (value - r->value[oldest]) * 1000 / (uint64_t)span;
}

#endif
