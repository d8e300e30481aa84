/* bench.c: `apprentice bench [KIND] [options]`: dispatch to one benchmark kind, or run every
 * kind's default matrix when no kind is given. Shared helpers live here too. */
#include "bench/bench.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} s_kind_t;

static const s_kind_t s_kinds[] = {
    {"train", ap_bench_train, "training tokens/s and MFU (configs A, B, C)"},
    {"sample", ap_bench_sample, "KV-cache sampling tokens/s at batch 1 and 16"},
    {"objectives", ap_bench_objectives, "objective loss+grad cost as a share of a learner step"},
    {"buffer", ap_bench_buffer, "buffer throughput with simulated actors and teachers"},
    {"weights", ap_bench_weights, "weight distribution to clients over TCP loopback"},
    {"pipeline", ap_bench_pipeline, "asynchronous vs synchronous topology, learner busy share"},
    {"teacher", ap_bench_teacher, "teacher scoring of a batch: shared prefixes, unshared, padded forward"},
};

int ap_cmd_bench(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: apprentice bench [KIND [options]]   (apprentice bench KIND --help)\n"
               "Prints one JSON line per measurement. Without KIND: every kind's default "
               "matrix.\n\nkinds:\n");
        for (size_t i = 0; i < AP_COUNT(s_kinds); i++)
            printf("  %-11s %s\n", s_kinds[i].name, s_kinds[i].help);
        return 0;
    }
    if (argc < 2) {
        int rc = 0;
        for (size_t i = 0; i < AP_COUNT(s_kinds); i++) {
            char *args[] = {(char *)s_kinds[i].name, NULL};
            rc |= s_kinds[i].run(1, args);
        }
        return rc;
    }
    for (size_t i = 0; i < AP_COUNT(s_kinds); i++)
        if (!strcmp(argv[1], s_kinds[i].name)) return s_kinds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "apprentice bench: unknown kind '%s' (apprentice bench --help)\n", argv[1]);
    return 2;
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double ap_bench_median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, s_cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

double ap_bench_sgemm_peak(int threads, int reps) {
    static double cached[64];
    if (threads >= 1 && threads < 64 && cached[threads] > 0) return cached[threads];
    const int n = 1024;
    float *a = ap_alloc_aligned((size_t)n * n * 4), *b = ap_alloc_aligned((size_t)n * n * 4),
          *c = ap_alloc_aligned((size_t)n * n * 4);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    openblas_set_num_threads(threads);
    double *t = ap_malloc((size_t)(reps + 1) * sizeof *t);
    for (int r = 0; r <= reps; r++) { /* the first run warms up and is dropped */
        double t0 = ap_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        t[r] = ap_now() - t0;
    }
    qsort(t + 1, (size_t)reps, sizeof *t, s_cmp_double);
    double gflops = 2.0 * n * n * n / t[1 + reps / 2] / 1e9;
    free(t), free(a), free(b), free(c);
    if (threads >= 1 && threads < 64) cached[threads] = gflops;
    return gflops;
}

void ap_bench_emit(json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(obj);
}
