/* Runs a command and reports its wall time and peak RSS, for the benchmark driver:
 *   measure [--preload LIBRARY] -- COMMAND ARGS...
 * prints "SECONDS PEAK_RSS_KIB" on the last line of stderr (fd 2) after the command's own
 * output; the exit status is the command's. Measuring from this small process, rather than
 * from Python, matters for peak RSS: a forked child's maximum RSS includes the parent memory it
 * inherited before exec. LIBRARY is put in LD_PRELOAD for the command only. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  const char* preload = NULL;
  int first = 1;
  if (first + 1 < argc && strcmp(argv[first], "--preload") == 0) {
    preload = argv[first + 1];
    first += 2;
  }
  if (first < argc && strcmp(argv[first], "--") == 0) ++first;
  if (first >= argc) {
    fprintf(stderr, "usage: measure [--preload LIBRARY] -- COMMAND ARGS...\n");
    return 2;
  }
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  pid_t child = fork();
  if (child == 0) {
    if (preload != NULL && preload[0] != '\0') setenv("LD_PRELOAD", preload, 1);
    else unsetenv("LD_PRELOAD");
    execvp(argv[first], argv + first);
    perror(argv[first]);
    _exit(127);
  }
  int status = 0;
  struct rusage usage;
  if (wait4(child, &status, 0, &usage) < 0) return 2;
  clock_gettime(CLOCK_MONOTONIC, &end);
  double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
  fprintf(stderr, "\n%.6f %ld\n", seconds, usage.ru_maxrss);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
