/* stress_util.h — helpers shared by the stress programs (header-only, C11).
 *
 * - fail(): one-line "<prog>: FAIL: ..." message on stderr, exit status 1, safe from any thread
 *   (formats on the stack, one write(2), _exit, so a broken heap cannot hang the report);
 * - a small fast PRNG (splitmix64) with one state per thread;
 * - fill/check patterns: a block's contents are a pure function of (seed, offset), so a checker
 *   needs only the seed and the size. Blocks up to STRESS_FULL_LIMIT bytes are written and
 *   checked entirely; larger ones on their first and last 4 KiB and 16 bytes of every 4 KiB
 *   page in between (every page is touched, and a page moved or lost by realloc is caught);
 * - resident memory (/proc/self/statm) and peak resident memory (VmHWM), read without malloc;
 * - a tiny "--name value" option parser with --help.
 */
#ifndef STRESS_UTIL_H
#define STRESS_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char* g_prog = "stress";
/* Extra text for failure messages (e.g. the seed), set by the program. */
static char g_fail_context[160];

__attribute__((format(printf, 1, 2), noreturn, unused)) static void fail(const char* fmt, ...) {
  char buf[512];
  int n = snprintf(buf, sizeof buf, "%s: FAIL: ", g_prog);
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  if (g_fail_context[0]) {
    int m = snprintf(buf + n, sizeof buf - (size_t)n, " [%s]", g_fail_context);
    n += m;
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  }
  buf[n++] = '\n';
  fflush(stdout);
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
  _exit(1);
}

#define CHECK_ALLOC(p, what, size)                                                     \
  do {                                                                                 \
    if (!(p)) fail("%s(%zu) returned NULL (errno %d)", (what), (size_t)(size), errno); \
  } while (0)

/* ---- random numbers ---------------------------------------------------------------------- */
typedef struct {
  uint64_t s;
} rng_t;

static inline uint64_t rng_next(rng_t* r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
/* Uniform in [0, n). */
static inline uint64_t rng_below(rng_t* r, uint64_t n) { return n ? rng_next(r) % n : 0; }
/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(rng_t* r, uint64_t lo, uint64_t hi) {
  return lo + rng_below(r, hi - lo + 1);
}
/* Log-uniform in [lo, hi]: as many small as large sizes per power of two. */
static inline uint64_t rng_logrange(rng_t* r, uint64_t lo, uint64_t hi) {
  int lb = 63 - __builtin_clzll(lo), hb = 63 - __builtin_clzll(hi);
  int b = (int)rng_range(r, (uint64_t)lb, (uint64_t)hb);
  uint64_t a = (uint64_t)1 << b, z = a * 2 - 1;
  if (a < lo) a = lo;
  if (z > hi) z = hi;
  return rng_range(r, a, z);
}

/* ---- patterns ---------------------------------------------------------------------------- */
#define STRESS_FULL_LIMIT ((size_t)64 * 1024)

static inline uint64_t pattern_word(uint64_t seed, size_t word) {
  return seed ^ ((uint64_t)word * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)word << 56);
}

static inline void fill_range(unsigned char* p, size_t a, size_t b, uint64_t seed) {
  while (a < b && (a & 7)) {
    p[a] = (unsigned char)(pattern_word(seed, a >> 3) >> ((a & 7) * 8));
    a++;
  }
  for (; a + 8 <= b; a += 8) {
    uint64_t w = pattern_word(seed, a >> 3);
    memcpy(p + a, &w, 8);
  }
  for (; a < b; a++) p[a] = (unsigned char)(pattern_word(seed, a >> 3) >> ((a & 7) * 8));
}

/* Offset of the first wrong byte in [a, b), or SIZE_MAX. */
static inline size_t check_range(const unsigned char* p, size_t a, size_t b, uint64_t seed) {
  while (a < b && (a & 7)) {
    if (p[a] != (unsigned char)(pattern_word(seed, a >> 3) >> ((a & 7) * 8))) return a;
    a++;
  }
  for (; a + 8 <= b; a += 8) {
    uint64_t w;
    memcpy(&w, p + a, 8);
    if (w != pattern_word(seed, a >> 3)) {
      for (size_t i = a;; i++)
        if (p[i] != (unsigned char)(pattern_word(seed, i >> 3) >> ((i & 7) * 8))) return i;
    }
  }
  for (; a < b; a++)
    if (p[a] != (unsigned char)(pattern_word(seed, a >> 3) >> ((a & 7) * 8))) return a;
  return SIZE_MAX;
}

/* Writes the pattern for a block of n bytes (all of it, or sampled when large). */
static inline void fill_pattern(void* block, size_t n, uint64_t seed) {
  unsigned char* p = (unsigned char*)block;
  if (n <= STRESS_FULL_LIMIT) {
    fill_range(p, 0, n, seed);
    return;
  }
  fill_range(p, 0, 4096, seed);
  for (size_t o = 4096; o + 4096 < n; o += 4096) fill_range(p, o, o + 16, seed);
  fill_range(p, n - 4096, n, seed);
}

/* Checks the bytes fill_pattern(block, written, seed) wrote within [from, limit) (limit below
 * `written` for a block that realloc shrank). Returns the first bad offset or SIZE_MAX. */
static inline size_t check_clipped_(const unsigned char* p, size_t a, size_t b, size_t from,
                                    size_t limit, uint64_t seed) {
  if (a < from) a = from;
  if (b > limit) b = limit;
  return a < b ? check_range(p, a, b, seed) : SIZE_MAX;
}
static inline size_t check_pattern_from(const void* block, size_t written, size_t from,
                                        size_t limit, uint64_t seed) {
  const unsigned char* p = (const unsigned char*)block;
  size_t r;
  if (written <= STRESS_FULL_LIMIT) return check_clipped_(p, 0, written, from, limit, seed);
  if ((r = check_clipped_(p, 0, 4096, from, limit, seed)) != SIZE_MAX) return r;
  for (size_t o = 4096; o + 4096 < written && o < limit; o += 4096)
    if ((r = check_clipped_(p, o, o + 16, from, limit, seed)) != SIZE_MAX) return r;
  return check_clipped_(p, written - 4096, written, from, limit, seed);
}
static inline size_t check_pattern(const void* block, size_t written, size_t limit, uint64_t seed) {
  return check_pattern_from(block, written, 0, limit, seed);
}

/* fail()s with a description if the block does not hold its pattern in [from, limit). */
static inline void verify_pattern_from(const void* block, size_t written, size_t from, size_t limit,
                                       uint64_t seed, const char* where) {
  size_t bad = check_pattern_from(block, written, from, limit, seed);
  if (bad != SIZE_MAX)
    fail("%s: block %p (%zu bytes) corrupted at offset %zu: byte 0x%02x, expected 0x%02x", where,
         block, written, bad, ((const unsigned char*)block)[bad],
         (unsigned)(unsigned char)(pattern_word(seed, bad >> 3) >> ((bad & 7) * 8)));
}
static inline void verify_pattern(const void* block, size_t written, size_t limit, uint64_t seed,
                                  const char* where) {
  verify_pattern_from(block, written, 0, limit, seed, where);
}

/* Self-describing blocks (at least 16 bytes): the pattern, then the size and seed in the first
 * two words, so whoever frees the block can check it without any other record. */
static inline void tag_block(void* block, size_t n, uint64_t seed) {
  fill_pattern(block, n, seed);
  uint64_t h[2] = {(uint64_t)n, seed};
  memcpy(block, h, sizeof h);
}
static inline size_t verify_tagged(const void* block, size_t max_size, const char* where) {
  uint64_t h[2];
  memcpy(h, block, sizeof h);
  if (h[0] < 16 || h[0] > max_size)
    fail("%s: block %p has a corrupted header (size field %llu)", where, block,
         (unsigned long long)h[0]);
  verify_pattern_from(block, (size_t)h[0], 16, (size_t)h[0], h[1], where);
  return (size_t)h[0];
}

/* ---- time and memory --------------------------------------------------------------------- */
static inline double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline ssize_t read_small_file_(const char* path, char* buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = 0;
  return n;
}

/* Resident bytes now (/proc/self/statm). */
static inline size_t rss_bytes(void) {
  char buf[256];
  if (read_small_file_("/proc/self/statm", buf, sizeof buf) < 0) return 0;
  unsigned long size = 0, resident = 0;
  if (sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* A "Name:   N kB" field of /proc/self/status, in bytes. */
static inline size_t status_bytes(const char* field) {
  char buf[4096];
  if (read_small_file_("/proc/self/status", buf, sizeof buf) < 0) return 0;
  size_t len = strlen(field);
  for (char* line = buf; line && *line;) {
    if (strncmp(line, field, len) == 0 && line[len] == ':')
      return (size_t)strtoull(line + len + 1, NULL, 10) * 1024;
    line = strchr(line, '\n');
    if (line) line++;
  }
  return 0;
}
static inline size_t peak_rss_bytes(void) { return status_bytes("VmHWM"); }

static inline double mib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* ---- options ----------------------------------------------------------------------------- */
typedef struct {
  const char* name; /* without the leading "--" */
  long long* value;
  const char* help;
  int is_flag; /* no argument: sets *value = 1 */
} option_t;

/* Accepts "--name value", "--name=value" (numbers with an optional k/m/g suffix) and --help. */
static void parse_options(int argc, char** argv, const char* summary, option_t* opts, int nopts) {
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      printf("usage: %s [options]\n%s\n\noptions:\n", g_prog, summary);
      for (int k = 0; k < nopts; k++) {
        if (opts[k].is_flag)
          printf("  --%-14s %s\n", opts[k].name, opts[k].help);
        else
          printf("  --%-14s %s (default %lld)\n", opts[k].name, opts[k].help, *opts[k].value);
      }
      exit(0);
    }
    if (strncmp(a, "--", 2) != 0) fail("unexpected argument '%s' (try --help)", a);
    const char* name = a + 2;
    const char* eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    option_t* o = NULL;
    for (int k = 0; k < nopts; k++)
      if (strlen(opts[k].name) == len && strncmp(opts[k].name, name, len) == 0) o = &opts[k];
    if (!o) fail("unknown option '%s' (try --help)", a);
    if (o->is_flag) {
      *o->value = 1;
      continue;
    }
    const char* v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!v) fail("option --%s needs a value", o->name);
    char* end;
    errno = 0;
    long long x = strtoll(v, &end, 0);
    if (end == v || errno) fail("bad value '%s' for --%s", v, o->name);
    switch (*end) {
      case 'k':
      case 'K':
        x <<= 10;
        end++;
        break;
      case 'm':
      case 'M':
        x <<= 20;
        end++;
        break;
      case 'g':
      case 'G':
        x <<= 30;
        end++;
        break;
      default:
        break;
    }
    if (*end) fail("bad value '%s' for --%s", v, o->name);
    *o->value = x;
  }
}

static inline void set_prog_name(const char* argv0) {
  const char* s = strrchr(argv0, '/');
  g_prog = s ? s + 1 : argv0;
}

#endif /* STRESS_UTIL_H */
