/* bench.h: the benchmarks behind `apprentice bench KIND ...`. Each prints one JSON object per
 * measurement on stdout (JSON Lines) and returns an exit code. Shared helpers: the sgemm peak
 * measured in the same run (for MFU), and a JSON line printer.
 *
 *   apprentice bench train --config B --batch 16 --seq 64 --threads 1
 *   apprentice bench                      # every kind's default matrix
 */
#ifndef APPRENTICE_BENCH_H
#define APPRENTICE_BENCH_H

#include <jansson.h>

int ap_bench_train(int argc, char **argv);      /* model: forward+backward+AdamW tokens/s */
int ap_bench_sample(int argc, char **argv);     /* model: KV-cache sampling tokens/s */
int ap_bench_objectives(int argc, char **argv); /* learner: loss+grad cost vs a learner step */
int ap_bench_buffer(int argc, char **argv);     /* buffer: scored groups/s with fake peers */
int ap_bench_weights(int argc, char **argv);    /* net: weight distribution to N clients */
int ap_bench_pipeline(int argc, char **argv);   /* launcher: async vs sync, learner busy % */
int ap_bench_teacher(int argc, char **argv);    /* teacher: scoring a batch, prefixes shared or not */

/* OpenBLAS sgemm GFLOP/s on a 1024^3 row-major product at `threads` threads, median of
 * `reps` (cached per thread count within a process). */
double ap_bench_sgemm_peak(int threads, int reps);

/* Median of x[0, n) (n >= 1; sorts x). */
double ap_bench_median(double *x, int n);

/* Print `obj` as one compact JSON line on stdout (flushed) and release it. */
void ap_bench_emit(json_t *obj);

#endif
