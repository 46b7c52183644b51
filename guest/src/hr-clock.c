/*
 * hr-clock — the guest's wall clock, read and set by the host after a restore.
 *
 *   hr-clock get            prints CLOCK_REALTIME as milliseconds since the epoch
 *   hr-clock set EPOCH_MS   sets CLOCK_REALTIME to EPOCH_MS, prints the previous value
 *
 * A restored guest's wall clock continues from the snapshot: it lags the host by the time between
 * the cut and the restore. The host brings it forward with `set` right after the VM starts.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "get") == 0) {
    printf("%lld\n", now_ms());
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "set") == 0) {
    char *end;
    long long ms = strtoll(argv[2], &end, 10);
    if (*end || ms <= 0) {
      fprintf(stderr, "hr-clock: EPOCH_MS must be a positive integer, got '%s'\n", argv[2]);
      return 2;
    }
    long long before = now_ms();
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
      perror("hr-clock: clock_settime");
      return 1;
    }
    printf("%lld\n", before);
    return 0;
  }
  fprintf(stderr, "usage: hr-clock get | hr-clock set EPOCH_MS\n");
  return 2;
}
