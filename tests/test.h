/* test.h: the few helpers every test uses. A test is a main() that runs checks, prints what
 * differed by how much, and returns ap_test_result(): non-zero when any check failed.
 *
 *   AP_CHECK(loss > 0, "loss %g", loss);
 *   AP_CHECK_NEAR(got, want, 1e-5, 1e-4, "logit[%d]", i);
 *   return ap_test_result();
 *
 * ap_testdata_dir(): $AP_TESTDATA, else the build's default (CTest sets AP_TESTDATA_DEFAULT),
 * else ../shared/testdata relative to the source tree.
 */
#ifndef APPRENTICE_TEST_H
#define APPRENTICE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int ap_test_failures = 0;
static int ap_test_checks = 0;

#define AP_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        ap_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            ap_test_failures++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* |got - want| <= atol or <= rtol * |want| */
#define AP_CHECK_NEAR(got, want, atol, rtol, ...)                                                  \
    do {                                                                                           \
        double g_ = (double)(got), w_ = (double)(want);                                            \
        int ok_ = fabs(g_ - w_) <= (atol) || fabs(g_ - w_) <= (rtol)*fabs(w_);                     \
        AP_CHECK(ok_ && isfinite(g_), "got %.9g want %.9g (diff %.3g): ", g_, w_, fabs(g_ - w_));  \
        if (!ok_) {                                                                                \
            fprintf(stderr, "    at ");                                                            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static inline int ap_test_result(void) {
    if (ap_test_failures) fprintf(stderr, "%d of %d checks failed\n", ap_test_failures, ap_test_checks);
    else fprintf(stderr, "all %d checks passed\n", ap_test_checks);
    return ap_test_failures ? 1 : 0;
}

static inline const char *ap_testdata_dir(void) {
    const char *d = getenv("AP_TESTDATA");
    if (d && *d) return d;
    d = getenv("AP_TESTDATA_DEFAULT");
    if (d && *d) return d;
#ifdef AP_SOURCE_DIR
    return AP_SOURCE_DIR "/../shared/testdata";
#else
    return "../shared/testdata";
#endif
}

/* A scratch directory for this test (created; under the working directory). */
static inline const char *ap_test_tmpdir(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "tmp-%s", name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make %s\n", buf);
        exit(1);
    }
    return buf;
}

#endif
