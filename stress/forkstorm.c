/* forkstorm — fork (and sometimes exec) while other threads allocate and use stdio.
 *
 * What it tests: the allocator's state across fork() in a multithreaded process. Forker
 * threads fork continuously while allocator threads churn blocks and stdio threads write to a
 * file (fprintf, fflush, fflush(NULL), and fopen/fclose, which link and unlink FILEs under the
 * stdio list lock) and read lines with getline (which reallocs its buffer inside libc while
 * holding the FILE's lock) from a regular file and through a pipe. Each
 * child checks and frees the blocks its forker held at the fork, allocates, checks and frees
 * blocks of its own (small, medium, large) and uses stdio, then _exit(0)s; one fork in
 * --exec-every execs /bin/true instead. The parent checks every child's exit status.
 *
 * Deadlocks are the main risk: glibc's fork() takes the stdio list lock after running the
 * atfork prepare handlers, so an allocator that locks itself in a prepare handler can deadlock
 * against a thread that holds the stdio list lock (fflush(NULL)) and waits for a FILE whose
 * owner is reallocating a getline buffer; and a child can inherit a lock that some other thread
 * held at the fork. (The pipe's writer uses write(2), not stdio: see pipe_writer.) A watchdog
 * turns a hang into a failure: --timeout seconds without a completed fork (the children still
 * running are killed). Each child has its own alarm, so a stuck child shows as a child killed
 * by SIGALRM.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>
#include <sys/wait.h>

#include "stress_alloc.h"
#include "stress_util.h"

static long long opt_forks = 300, opt_forkers = 2, opt_threads = 2, opt_exec_every = 4,
                 opt_timeout = 30, opt_child_timeout = 20, opt_seed = 1;

#define MAX_FORKERS 64
#define HELD 32
static atomic_int child_pids[MAX_FORKERS];
static atomic_int stop_flag;
static atomic_llong execs_done, lines_read, alloc_ops;

/* Watchdog, once a second (SIGALRM from an interval timer): fails when no fork has completed
 * for --timeout seconds (a hang, not a slow machine), killing the children still running. */
static atomic_llong forks_done;
static void on_tick(int sig) {
  (void)sig;
  static long long last = -1, stalled = 0;
  long long now = atomic_load(&forks_done);
  if (now != last) {
    last = now;
    stalled = 0;
    return;
  }
  if (++stalled < opt_timeout) return;
  for (int i = 0; i < MAX_FORKERS; i++) {
    int pid = atomic_load(&child_pids[i]);
    if (pid > 0) kill(pid, SIGKILL);
  }
  char msg[200];
  int n = snprintf(msg, sizeof msg,
                   "forkstorm: FAIL: no progress for %lld s after %lld forks: the process hung "
                   "(deadlock in fork, stdio or the allocator?)\n",
                   stalled, now);
  ssize_t w = write(2, msg, (size_t)n);
  (void)w;
  _exit(1);
}

typedef struct {
  void* p;
  size_t n;
  uint64_t seed;
} held_t;

static size_t random_size(rng_t* r) {
  uint64_t x = rng_below(r, 100);
  if (x < 85) return (size_t)rng_logrange(r, 16, 4096);
  if (x < 98) return (size_t)rng_logrange(r, 4097, 256 * 1024);
  return (size_t)rng_range(r, 256 * 1024 + 1, 2 << 20);
}

static void hold(held_t* h, rng_t* r) {
  h->n = random_size(r);
  h->p = S_MALLOC(h->n);
  CHECK_ALLOC(h->p, "malloc", h->n);
  h->seed = rng_next(r);
  fill_pattern(h->p, h->n, h->seed);
}

static void release(held_t* h, const char* where) {
  verify_pattern(h->p, h->n, h->n, h->seed, where);
  S_FREE(h->p);
  h->p = NULL;
}

/* ---- the child ---------------------------------------------------------------------------- */
static void child_work(held_t* inherited, rng_t* r) {
  signal(SIGALRM, SIG_DFL); /* a stuck child dies of SIGALRM; the parent reports it */
  alarm((unsigned)opt_child_timeout);
  for (int i = 0; i < HELD; i++) release(&inherited[i], "forkstorm child: inherited block");
  held_t mine[64];
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < 64; i++) hold(&mine[i], r);
    for (int i = 0; i < 64; i++) release(&mine[i], "forkstorm child: own block");
  }
  FILE* f = fopen("/dev/null", "w");
  if (!f) fail("child: fopen(/dev/null): %s", strerror(errno));
  for (int i = 0; i < 100; i++) fprintf(f, "child %d line %d\n", (int)getpid(), i);
  fclose(f);
  char* s = NULL;
  if (asprintf(&s, "%d-%s", (int)getpid(), "asprintf") < 0 || !s) fail("child: asprintf failed");
  free(s); /* libc's allocation: always the plain free */
}

static void* forker(void* arg) {
  int id = (int)(uintptr_t)arg;
  rng_t r = {(uint64_t)opt_seed * 7919 + (uint64_t)id};
  held_t held[HELD];
  for (int i = 0; i < HELD; i++) hold(&held[i], &r);
  long long n = opt_forks / opt_forkers + (id < opt_forks % opt_forkers ? 1 : 0);
  for (long long k = 0; k < n; k++) {
    for (int i = 0; i < 4; i++) { /* refresh a few held blocks between forks */
      held_t* h = &held[rng_below(&r, HELD)];
      release(h, "forkstorm forker: held block");
      hold(h, &r);
    }
    int do_exec = opt_exec_every > 0 && rng_below(&r, (uint64_t)opt_exec_every) == 0;
    pid_t pid = fork();
    if (pid < 0) fail("fork: %s", strerror(errno));
    if (pid == 0) {
      if (do_exec) {
        execl("/bin/true", "true", (char*)NULL);
        _exit(127);
      }
      child_work(held, &r);
      _exit(0);
    }
    atomic_store(&child_pids[id], pid);
    int status;
    while (waitpid(pid, &status, 0) < 0)
      if (errno != EINTR) fail("waitpid: %s", strerror(errno));
    atomic_store(&child_pids[id], 0);
    if (WIFSIGNALED(status))
      fail("child %d (fork %lld of forker %d%s) killed by signal %d (%s)", (int)pid, k, id,
           do_exec ? ", exec" : "", WTERMSIG(status), strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail("child %d (fork %lld of forker %d%s) exited with status %d", (int)pid, k, id,
           do_exec ? ", exec" : "", WEXITSTATUS(status));
    atomic_fetch_add(&forks_done, 1);
    if (do_exec) atomic_fetch_add(&execs_done, 1);
  }
  for (int i = 0; i < HELD; i++) release(&held[i], "forkstorm forker: final");
  return NULL;
}

/* ---- the other threads -------------------------------------------------------------------- */
static void* allocator_thread(void* arg) {
  rng_t r = {(uint64_t)opt_seed * 104729 + (uint64_t)(uintptr_t)arg};
  enum { N = 256 };
  held_t* h = (held_t*)S_CALLOC(N, sizeof(held_t));
  CHECK_ALLOC(h, "calloc", N * sizeof(held_t));
  long long ops = 0;
  while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
    held_t* s = &h[rng_below(&r, N)];
    if (s->p)
      release(s, "forkstorm allocator thread");
    else
      hold(s, &r);
    ops++;
  }
  for (int i = 0; i < N; i++)
    if (h[i].p) release(&h[i], "forkstorm allocator thread: final");
  S_FREE(h);
  atomic_fetch_add(&alloc_ops, ops);
  return NULL;
}

static void* file_writer(void* arg) {
  (void)arg;
  FILE* f = tmpfile();
  if (!f) fail("tmpfile: %s", strerror(errno));
  for (long long i = 0; !atomic_load_explicit(&stop_flag, memory_order_relaxed); i++) {
    fprintf(f, "record %lld: %0*d\n", i, (int)(i % 64), 7);
    if (i % 16 == 0) fflush(f);
#ifndef STRESS_TSAN /* ThreadSanitizer's own fork interceptor holds its locks across fork */
    if (i % 128 == 0) fflush(NULL); /* list lock, then every FILE's lock, in turn */
#endif
    if (i % 4096 == 0) rewind(f);
    if (i % 64 == 0) { /* FILE objects and their buffers come from malloc */
      FILE* g = fopen("/dev/null", "w");
      if (!g) fail("fopen(/dev/null): %s", strerror(errno));
      fprintf(g, "%lld\n", i);
      fclose(g);
    }
  }
  fclose(f);
  return NULL;
}

/* getline on a regular file (never blocks for long): its buffer is freed now and then, so
 * getline keeps reallocating it while holding the FILE's lock, which fflush(NULL) waits for. */
static char file_lines_path[] = "/tmp/forkstorm-lines-XXXXXX";
static atomic_llong file_lines_read;

static void* file_reader(void* arg) {
  (void)arg;
  FILE* rd = fopen(file_lines_path, "r");
  if (!rd) fail("fopen(%s): %s", file_lines_path, strerror(errno));
  char* line = NULL;
  size_t cap = 0;
  long long count = 0, expect = 0;
  while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
    ssize_t len = getline(&line, &cap, rd);
    if (len < 0) {
      if (expect != 512) fail("lines file: %lld lines, expected 512", expect);
      rewind(rd);
      expect = 0;
      continue;
    }
    if (len != expect * 13 % 4000 + 1) fail("lines file: line %lld has %zd bytes", expect, len);
    for (ssize_t k = 0; k + 1 < len; k++)
      if (line[k] != 'A' + (int)((expect + k) % 26))
        fail("lines file: line %lld corrupted", expect);
    expect++;
    if (++count % 7 == 0) { /* libc's buffer: the plain free */
      free(line);
      line = NULL;
      cap = 0;
    }
  }
  free(line);
  fclose(rd);
  atomic_fetch_add(&file_lines_read, count);
  return NULL;
}

static void write_lines_file(void) {
  int fd = mkstemp(file_lines_path);
  if (fd < 0) fail("mkstemp: %s", strerror(errno));
  FILE* w = fdopen(fd, "w");
  if (!w) fail("fdopen: %s", strerror(errno));
  for (long long i = 0; i < 512; i++) {
    for (long long k = 0; k < i * 13 % 4000; k++) fputc('A' + (int)((i + k) % 26), w);
    fputc('\n', w);
  }
  if (fclose(w) != 0) fail("writing %s: %s", file_lines_path, strerror(errno));
}

static int pipe_fds[2];

/* Raw write(2), no FILE: a FILE writer blocked on a full pipe would hold its FILE lock, which
 * fflush(NULL) waits for while it holds the list lock the reader's fdopen needs — a hang of the
 * test itself. With a lock-free writer the reader always gets data, so every wait ends. */
static void* pipe_writer(void* arg) {
  (void)arg;
  char buf[4096];
  size_t used = 0;
  for (long long i = 0; !atomic_load_explicit(&stop_flag, memory_order_relaxed); i++) {
    used += (size_t)snprintf(buf + used, sizeof buf - used, "%lld\n", i);
    for (long long k = 0; k < i % 300; k++) buf[used++] = (char)('a' + (int)(k % 26));
    buf[used++] = '\n';
    if (used > sizeof buf - 400 || i % 8 == 0) {
      for (size_t off = 0; off < used;) {
        ssize_t w = write(pipe_fds[1], buf + off, used - off);
        if (w < 0 && errno != EINTR) fail("pipe write: %s", strerror(errno));
        if (w > 0) off += (size_t)w;
      }
      used = 0;
    }
  }
  close(pipe_fds[1]);
  return NULL;
}

static void* pipe_reader(void* arg) {
  (void)arg;
  FILE* rd = fdopen(pipe_fds[0], "r");
  if (!rd) fail("fdopen: %s", strerror(errno));
  char* line = NULL; /* getline's buffer: libc mallocs it, so the plain free */
  size_t cap = 0;
  long long expect = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, rd)) >= 0) {
    long long got = strtoll(line, NULL, 10);
    if (got != expect) fail("pipe: got record %lld, expected %lld", got, expect);
    if ((len = getline(&line, &cap, rd)) < 0) break;
    long long m = expect % 300;
    if (len != m + 1) fail("pipe: record %lld has %zd bytes, expected %lld", expect, len, m + 1);
    for (long long k = 0; k < m; k++)
      if (line[k] != 'a' + (int)(k % 26)) fail("pipe: record %lld corrupted", expect);
    expect++;
  }
  free(line);
  fclose(rd);
  atomic_fetch_add(&lines_read, expect);
  return NULL;
}

int main(int argc, char** argv) {
  set_prog_name(argv[0]);
  option_t opts[] = {
      {"forks", &opt_forks, "forks in all", 0},
      {"forkers", &opt_forkers, "threads that fork", 0},
      {"threads", &opt_threads, "threads that only allocate", 0},
      {"exec-every", &opt_exec_every, "about one fork in N execs /bin/true (0: never)", 0},
      {"timeout", &opt_timeout, "seconds without a completed fork before a hang is reported", 0},
      {"child-timeout", &opt_child_timeout, "seconds a child may take", 0},
      {"seed", &opt_seed, "random seed", 0},
  };
  parse_options(argc, argv,
                "Fork storm: fork and exec while other threads allocate and use stdio; children "
                "check inherited blocks and allocate; hangs are reported as failures.",
                opts, (int)(sizeof opts / sizeof opts[0]));
  if (opt_forks < 0 || opt_forkers < 1 || opt_forkers > MAX_FORKERS || opt_threads < 0 ||
      opt_timeout < 1 || opt_child_timeout < 1)
    fail("bad options");
  snprintf(g_fail_context, sizeof g_fail_context, "seed=%lld", opt_seed);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_tick;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval tick = {{1, 0}, {1, 0}};
  setitimer(ITIMER_REAL, &tick, NULL);
  if (pipe(pipe_fds) != 0) fail("pipe: %s", strerror(errno));

  double t0 = now_sec();
  write_lines_file();
  size_t nother = (size_t)opt_threads + 4;
  pthread_t* other = (pthread_t*)S_MALLOC(nother * sizeof(pthread_t));
  pthread_t* forkers = (pthread_t*)S_MALLOC((size_t)opt_forkers * sizeof(pthread_t));
  CHECK_ALLOC(other && forkers, "malloc", nother * sizeof(pthread_t));
  int rc = 0;
  for (long long i = 0; i < opt_threads && !rc; i++)
    rc = pthread_create(&other[i], NULL, allocator_thread, (void*)(uintptr_t)i);
  if (!rc) rc = pthread_create(&other[opt_threads], NULL, file_writer, NULL);
  if (!rc) rc = pthread_create(&other[opt_threads + 1], NULL, pipe_writer, NULL);
  if (!rc) rc = pthread_create(&other[opt_threads + 2], NULL, pipe_reader, NULL);
  if (!rc) rc = pthread_create(&other[opt_threads + 3], NULL, file_reader, NULL);
  for (long long i = 0; i < opt_forkers && !rc; i++)
    rc = pthread_create(&forkers[i], NULL, forker, (void*)(uintptr_t)i);
  if (rc) fail("pthread_create: %s", strerror(rc));

  for (long long i = 0; i < opt_forkers; i++) pthread_join(forkers[i], NULL);
  atomic_store(&stop_flag, 1);
  for (size_t i = 0; i < nother; i++) pthread_join(other[i], NULL);
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  unlink(file_lines_path);
  S_FREE(other);
  S_FREE(forkers);
  if (atomic_load(&forks_done) != opt_forks)
    fail("%lld forks done, %lld expected", (long long)atomic_load(&forks_done), opt_forks);
  printf(
      "forkstorm: %lld forks (%lld exec), %lld forkers, %lld allocator threads (%lld ops), "
      "%lld pipe records, %lld file lines, %.2f s, ok\n",
      opt_forks, (long long)atomic_load(&execs_done), opt_forkers, opt_threads,
      (long long)atomic_load(&alloc_ops), (long long)atomic_load(&lines_read),
      (long long)atomic_load(&file_lines_read), now_sec() - t0);
  return 0;
}
