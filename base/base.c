/* base.c: assertions, thread-local error messages, logging, memory, time, files.
 * See include/apprentice/base.h for the conventions. */
#include "apprentice/base.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char s_errbuf[2048];
static char s_role[32] = "apprentice";
static int s_role_id = -1;
static int s_level = AP_LOG_INFO;

_Noreturn void ap_die(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

int ap_err(const char *fmt, ...) {
    char tmp[sizeof s_errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap); /* fmt may format ap_errmsg() itself */
    va_end(ap);
    memcpy(s_errbuf, tmp, sizeof tmp);
    return -1;
}

const char *ap_errmsg(void) { return s_errbuf; }

void ap_log_set_role(const char *role, int id) {
    snprintf(s_role, sizeof s_role, "%s", role);
    s_role_id = id;
}

void ap_log_set_level(int level) { s_level = level; }

void ap_log(int level, const char *fmt, ...) {
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < s_level) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[4096];
    int n = 0;
    if (s_role_id >= 0)
        n = snprintf(line, sizeof line, "%s.%03ld %s[%d] %s ", when, ts.tv_nsec / 1000000,
                     s_role, s_role_id, names[level & 3]);
    else
        n = snprintf(line, sizeof line, "%s.%03ld %s %s ", when, ts.tv_nsec / 1000000, s_role,
                     names[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); /* one write per line: lines of processes do not interleave */
}

int ap_ratelimit_ok(ap_ratelimit_t *rl, double interval) {
    double now = ap_now();
    if (rl->last == 0 || now - rl->last >= interval) {
        rl->last = now;
        return 1;
    }
    rl->suppressed++;
    return 0;
}

void *ap_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    AP_ASSERTF(p, "out of memory allocating %zu bytes", n);
    return p;
}

void *ap_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    AP_ASSERTF(p, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *ap_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    AP_ASSERTF(q, "out of memory reallocating to %zu bytes", n);
    return q;
}

char *ap_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = ap_malloc(n);
    memcpy(d, s, n);
    return d;
}

void *ap_alloc_aligned(size_t n) {
    size_t rounded = (n + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    AP_ASSERTF(p, "out of memory allocating %zu aligned bytes", n);
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

char *ap_sprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    AP_ASSERT(n >= 0);
    char *s = ap_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

double ap_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double ap_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ap_sleep(double seconds) {
    if (seconds <= 0) return;
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int ap_file_read(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return ap_err("%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = ap_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = ap_realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ap_err("%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return 0;
}

int ap_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int ap_mkdirs(const char *path) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return ap_err("%s: path too long", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return ap_err("mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return ap_err("mkdir %s: %s", tmp, strerror(errno));
    return 0;
}

struct ap_afile {
    int fd;
    char *path;
    char *tmp;
};

ap_afile_t *ap_afile_open(const char *path) {
    ap_afile_t *f = ap_calloc(1, sizeof *f);
    f->path = ap_strdup(path);
    f->tmp = ap_sprintf("%s.tmp.%d", path, (int)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        ap_err("%s: %s", f->tmp, strerror(errno));
        free(f->path);
        free(f->tmp);
        free(f);
        return NULL;
    }
    return f;
}

int ap_afile_write(ap_afile_t *f, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return ap_err("%s: %s", f->tmp, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void s_afile_free(ap_afile_t **fp) {
    free((*fp)->path);
    free((*fp)->tmp);
    free(*fp);
    *fp = NULL;
}

void ap_afile_abort(ap_afile_t **fp) {
    if (!fp || !*fp) return;
    close((*fp)->fd);
    unlink((*fp)->tmp);
    s_afile_free(fp);
}

int ap_afile_commit(ap_afile_t **fp) {
    ap_afile_t *f = *fp;
    if (fsync(f->fd) < 0) {
        ap_err("fsync %s: %s", f->tmp, strerror(errno));
        ap_afile_abort(fp);
        return -1;
    }
    close(f->fd);
    f->fd = -1;
    if (rename(f->tmp, f->path) < 0) {
        ap_err("rename %s -> %s: %s", f->tmp, f->path, strerror(errno));
        unlink(f->tmp);
        s_afile_free(fp);
        return -1;
    }
    char *dir = ap_strdup(f->path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* best effort: some filesystems refuse fsync on directories */
        close(dfd);
    }
    free(dir);
    s_afile_free(fp);
    return 0;
}

int ap_file_write_atomic(const char *path, const void *data, size_t len) {
    ap_afile_t *f = ap_afile_open(path);
    if (!f) return -1;
    if (ap_afile_write(f, data, len) < 0) {
        ap_afile_abort(&f);
        return -1;
    }
    return ap_afile_commit(&f);
}

/* Peak resident set of this process image in MiB. VmHWM of /proc/self/status belongs to the
 * address space of the current exec; getrusage's ru_maxrss is carried across fork + exec on
 * Linux (a child started by a big parent reports the parent's peak), so it is only the fallback
 * when /proc is unreadable. */
double ap_peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "re");
    if (f) {
        char line[256];
        long kb = -1; /* VmHWM is in kB */
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM:", 6)) {
                kb = strtol(line + 6, NULL, 10);
                break;
            }
        fclose(f);
        if (kb >= 0) return (double)kb / 1024.0;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in kB on Linux */
}

uint64_t ap_hash64(const void *data, size_t len, uint64_t seed) {
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
