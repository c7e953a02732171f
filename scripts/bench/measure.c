/* Runs a command and reports its wall time, peak RSS, CPU time and minor page faults, for the
 * benchmark driver and the mapalloc command:
 *   measure [--preload LIBRARY] [--report FILE] [--prime-mib MIB] -- COMMAND ARGS...
 * prints "SECONDS PEAK_RSS_KIB USER_SECONDS SYS_SECONDS MINOR_FAULTS" on the last line of stderr
 * (fd 2) after the command's own output, or into FILE with --report (so that the command's
 * stderr stays its own); the exit status is the command's (128 + N if signal N killed it).
 * Readers take the first fields they know, so older readers of "SECONDS PEAK_RSS_KIB" or of the
 * four-field line keep working. CPU times and page faults (ru_minflt: faults served without I/O,
 * mostly first touches of fresh anonymous pages) include the command's waited-for children, as
 * the time(1) command's do.
 * Measuring from this small process, rather than from Python, matters for peak RSS: a forked
 * child's maximum RSS includes the parent memory it inherited before exec. LIBRARY is put in
 * LD_PRELOAD for the command only.
 * --prime-mib MIB touches MIB MiB of huge-page memory and frees it before the command starts
 * (outside the timing). On the benchmark machine, a virtual machine with a virtio-balloon, the
 * order of allocators at times decided their times: churn-8t under mapalloc took 0.61 s after a
 * mapalloc run, 1.15 s after a jemalloc run and 1.18 s after 3 s idle, the slow runs spending
 * 40 % in the kernel's page zeroing. Our reading (not proven): memory free for about 2 s is
 * reported to the host and comes back cold, and a run that follows a huge-page user inherits
 * its warm memory. Priming gave every run the fast case (0.59 - 0.80 s either way); an hour
 * later the effect was gone, primed or not. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double timeval_seconds(struct timeval value) {
  return (double)value.tv_sec + (double)value.tv_usec / 1e6;
}

/* Maps `mib` MiB on 2 MiB boundaries as huge pages, writes a byte to every 4 KiB, and unmaps it:
 * the kernel's free lists then hold that much recently used (warm) memory. */
static void prime_memory(long mib) {
  const size_t kHugePageBytes = (size_t)2 << 20;
  size_t bytes = (size_t)mib << 20;
  char* mapping = mmap(NULL, bytes + kHugePageBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) return; /* priming is best effort */
  char* aligned = (char*)(((uintptr_t)mapping + kHugePageBytes - 1) & ~(kHugePageBytes - 1));
  madvise(aligned, bytes, MADV_HUGEPAGE);
  for (size_t offset = 0; offset < bytes; offset += 4096) ((volatile char*)aligned)[offset] = 1;
  munmap(mapping, bytes + kHugePageBytes);
}

int main(int argc, char** argv) {
  const char* preload = NULL;
  const char* report = NULL;
  long prime_mib = 0;
  int first = 1;
  while (first + 1 < argc && argv[first][0] == '-' && strcmp(argv[first], "--") != 0) {
    if (strcmp(argv[first], "--preload") == 0) preload = argv[first + 1];
    else if (strcmp(argv[first], "--report") == 0) report = argv[first + 1];
    else if (strcmp(argv[first], "--prime-mib") == 0) prime_mib = atol(argv[first + 1]);
    else break;
    first += 2;
  }
  if (first < argc && strcmp(argv[first], "--") == 0) ++first;
  if (first >= argc) {
    fprintf(stderr,
            "usage: measure [--preload LIBRARY] [--report FILE] [--prime-mib MIB] -- COMMAND "
            "ARGS...\n");
    return 2;
  }
  if (prime_mib > 0) prime_memory(prime_mib);
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  pid_t child = fork();
  if (child < 0) {
    perror("measure: fork");
    return 2;
  }
  if (child == 0) {
    if (preload != NULL && preload[0] != '\0') setenv("LD_PRELOAD", preload, 1);
    else unsetenv("LD_PRELOAD");
    execvp(argv[first], argv + first);
    perror(argv[first]);
    _exit(127);
  }
  /* Like system(): a Ctrl-C at the terminal goes to the command (same process group); this
   * process waits for it and still reports. Set after the fork, so the command keeps the
   * default dispositions. */
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  int status = 0;
  struct rusage usage;
  if (wait4(child, &status, 0, &usage) < 0) return 2;
  clock_gettime(CLOCK_MONOTONIC, &end);
  double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
  double user = timeval_seconds(usage.ru_utime), sys = timeval_seconds(usage.ru_stime);
  if (report != NULL) {
    FILE* out = fopen(report, "w");
    if (out == NULL) {
      perror(report);
      return 2;
    }
    fprintf(out, "%.6f %ld %.6f %.6f %ld\n", seconds, usage.ru_maxrss, user, sys,
            usage.ru_minflt);
    fclose(out);
  } else {
    fprintf(stderr, "\n%.6f %ld %.6f %.6f %ld\n", seconds, usage.ru_maxrss, user, sys,
            usage.ru_minflt);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
