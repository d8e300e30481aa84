/* bench_pending.c: benchmark kinds whose module has not landed yet. Each entry is removed when
 * its module defines the real ap_bench_KIND; the file goes when it is empty. */
#include <stdio.h>

#include "bench/bench.h"

static int s_pending(const char *name) {
    fprintf(stderr, "apprentice bench %s: not available in this build yet\n", name);
    return 1;
}

int ap_bench_buffer(int argc, char **argv) { (void)argc; return s_pending(argv[0]); }
