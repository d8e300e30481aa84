/* base.h: what every module of apprentice uses: assertions, errors, logging, memory, time,
 * whole-file and atomic file I/O.
 *
 * Three kinds of error (STYLE.md 8):
 *   - a broken invariant is a bug:            AP_ASSERT(n > 0);   (always on, aborts)
 *   - a failing call or unreadable file:      return ap_err("open %s: %s", path, strerror(errno));
 *     ap_err() stores the message for this thread and returns -1; the caller reads it with
 *     ap_errmsg() and either adds context (ap_err("loading %s: %s", dir, ap_errmsg())) or logs it.
 *   - bad input from the network or a user file: rejected, counted, logged once per burst
 *     (ap_ratelimit_t), the process goes on.
 *
 * Usage:
 *   ap_log_set_role("learner", 0);
 *   float *x = ap_malloc(n * sizeof *x);                 // aborts on OOM: never NULL
 *   if (ap_file_write_atomic(path, buf, len) < 0) ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
 */
#ifndef APPRENTICE_BASE_H
#define APPRENTICE_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AP_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) ap_die(__FILE__, __LINE__, "assertion failed: %s", #cond);                    \
    } while (0)
#define AP_ASSERTF(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) ap_die(__FILE__, __LINE__, __VA_ARGS__);                                      \
    } while (0)

#define AP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define AP_COUNT(arr) (sizeof(arr) / sizeof((arr)[0]))

/* Print "file:line: message" and abort. For bugs only. */
_Noreturn void ap_die(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Errors: set this thread's message, return -1. */
int ap_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message set by ap_err() on this thread ("" if none). Borrowed. */
const char *ap_errmsg(void);

/* Logging to stderr: "2026-11-24T10:00:00.123 learner[0] WARN message". */
enum { AP_LOG_DEBUG = 0, AP_LOG_INFO = 1, AP_LOG_WARN = 2, AP_LOG_ERROR = 3 };
void ap_log_set_role(const char *role, int id);
void ap_log_set_level(int level);
void ap_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Rate limit for bad-input logging: ok at most once per `interval` seconds; the number of
 * suppressed calls since the last ok is in `suppressed` when it returns 1. */
typedef struct {
    double last;     /* ap_now() of the last allowed call, 0 = never */
    long suppressed; /* calls refused since then */
} ap_ratelimit_t;
int ap_ratelimit_ok(ap_ratelimit_t *rl, double interval);

/* Memory: abort on exhaustion (a bug or a machine problem, never bad input: sizes from the
 * network are validated before anything is allocated). */
void *ap_malloc(size_t n);
void *ap_calloc(size_t n, size_t size);
void *ap_realloc(void *p, size_t n);
char *ap_strdup(const char *s);
/* 64-byte aligned, zeroed; free with free(). */
void *ap_alloc_aligned(size_t n);
/* printf into a new string; the caller frees. */
char *ap_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Time. */
double ap_now(void);  /* monotonic seconds */
double ap_wall(void); /* seconds since the epoch */
void ap_sleep(double seconds);

/* Files. All return 0 / -1 with ap_err() set (message names the path and the reason). */
int ap_file_read(const char *path, char **data, size_t *len); /* NUL-terminated; caller frees */
int ap_file_write_atomic(const char *path, const void *data, size_t len);
int ap_mkdirs(const char *path); /* mkdir -p */
int ap_path_exists(const char *path);

/* Streaming atomic write: temp file beside the target, fsync, rename, fsync the directory.
 *   ap_afile_t *f = ap_afile_open(path);  ap_afile_write(f, buf, n) ...;  ap_afile_commit(&f);
 * ap_afile_abort(&f) removes the temp file. Both NULL the pointer. */
typedef struct ap_afile ap_afile_t;
ap_afile_t *ap_afile_open(const char *path);
int ap_afile_write(ap_afile_t *f, const void *data, size_t len);
int ap_afile_commit(ap_afile_t **f);
void ap_afile_abort(ap_afile_t **f);

/* Peak resident set size of this process image in MiB: VmHWM of /proc/self/status (getrusage's
 * ru_maxrss, the fallback, is carried across fork + exec on Linux). */
double ap_peak_rss_mb(void);

/* 64-bit FNV-1a, for cheap content hashes (vocabulary identity, prompt split). */
uint64_t ap_hash64(const void *data, size_t len, uint64_t seed);

#endif
