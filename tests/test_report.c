/* test_report.c: `apprentice report` (launcher/report.c) on synthetic run directories whose
 * numbers are known by construction:
 *   - two continued-SFT runs (role "sft" records) and two launched runs (role "eval"/"learner"/
 *     "launcher" records), one of them stopped early by its time budget, grouped by name;
 *   - accuracy at fixed steps (first evaluation at or after the step; a run that stopped before
 *     it is left out and counted), at fixed minutes (last evaluation written by then), final;
 *   - the monitors' tail means, "—" for an absent monitor, reference models from sft.json;
 *   - bad input: malformed lines (not JSON, a JSON array, no values, a string time) are skipped
 *     and counted, a run without metrics.jsonl and an unreadable reference are named and
 *     skipped, usage errors exit 2, nothing readable exits 1;
 *   - --curves writes mean curves (role "eval") per group.
 * The command runs in this process with stdout sent to a file. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"
#include "test.h"

static char s_dir[600];

static FILE *s_open(const char *run) {
    char *d = ap_sprintf("%s/%s", s_dir, run), *p = ap_sprintf("%s/metrics.jsonl", d);
    AP_ASSERT(ap_mkdirs(d) == 0);
    FILE *f = fopen(p, "w");
    AP_ASSERT(f);
    free(d), free(p);
    return f;
}

/* Run `apprentice report ARGS...` with stdout captured; returns the exit code, *out the text. */
static int s_report(char **out, int argc, const char **argv) {
    char *path = ap_sprintf("%s/out.md", s_dir);
    fflush(stdout);
    int saved = dup(1), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    AP_ASSERT(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    int rc = ap_cmd_report(argc, (char **)argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    *out = NULL;
    AP_ASSERT(ap_file_read(path, out, NULL) == 0);
    free(path);
    return rc;
}

static void s_expect(const char *text, const char *needle) {
    AP_CHECK(strstr(text, needle) != NULL, "output lacks \"%s\"", needle);
}

static void s_write_runs(void) {
    const double t0 = 1.7e9;
    /* SFT: step s at t0 + 0.12 s; evaluations at 50 and the final one at 100. */
    const double sft_acc[2][2] = {{0.5, 0.6}, {0.4, 0.8}};
    for (int r = 0; r < 2; r++) {
        char name[32];
        snprintf(name, sizeof name, "add-sft-s%d", r + 1);
        FILE *f = s_open(name);
        for (int s = 1; s <= 100; s++) {
            fprintf(f, "{\"time\":%.3f,\"role\":\"sft\",\"id\":0,\"step\":%d,\"values\":"
                       "{\"loss/sft\":0.5,\"lr\":0.001}}\n", t0 + 0.12 * s, s);
            if (s == 50)
                fprintf(f, "{\"time\":%.3f,\"role\":\"sft\",\"id\":0,\"step\":50,\"values\":"
                           "{\"eval/accuracy\":%g,\"eval/n\":256}}\n", t0 + 6.05, sft_acc[r][0]);
        }
        fprintf(f, "{\"time\":%.3f,\"role\":\"sft\",\"id\":0,\"step\":100,\"values\":"
                   "{\"eval/accuracy\":%g,\"event\":\"final\"}}\n", t0 + 12.5, sft_acc[r][1]);
        fclose(f);
    }
    /* gkd-1 seed 1: 100 steps over 100 s, evaluations at 0, 52 (written at 61 s) and final. */
    FILE *f = s_open("add-gkd-1-s1");
    fprintf(f, "{\"time\":%.3f,\"role\":\"launcher\",\"id\":0,\"step\":0,\"values\":"
               "{\"event\":\"start\",\"launcher/restarts\":0}}\n", t0);
    fprintf(f, "{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":0,\"values\":"
               "{\"eval/accuracy\":0.3}}\n", t0 + 1);
    fprintf(f, "{not json at all\n");                                           /* malformed 1 */
    fprintf(f, "[1, 2, 3]\n");                                                  /* malformed 2 */
    fprintf(f, "\n");                                                           /* empty: ignored */
    for (int s = 1; s <= 100; s++) {
        fprintf(f, "{\"time\":%.3f,\"role\":\"learner\",\"id\":0,\"step\":%d,\"values\":"
                   "{\"length/mean\":%g,\"overlap/teacher\":0.5,\"staleness/mean\":null,"
                   "\"kl/teacher_student\":%g}}\n", t0 + s, s, s > 80 ? 6.0 : 4.0, s > 80 ? 0.1 : 1.0);
        if (s == 52)
            fprintf(f, "{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":52,\"values\":"
                       "{\"eval/accuracy\":0.7}}\n", t0 + 61);
    }
    fprintf(f, "{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":7}\n", t0 + 5); /* malformed 3 */
    fprintf(f, "{\"time\":\"soon\",\"role\":\"eval\",\"id\":0,\"step\":7,\"values\":{}}\n"); /* 4 */
    fprintf(f, "{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":100,\"values\":"
               "{\"eval/accuracy\":0.9,\"eval/final\":1}}\n", t0 + 104);
    fprintf(f, "{\"time\":%.3f,\"role\":\"launcher\",\"id\":0,\"step\":0,\"values\":"
               "{\"event\":\"finished\"}}\n", t0 + 105);
    fclose(f);
    /* gkd-1 seed 2: stopped by its time budget at step 60 (records out of time order). */
    f = s_open("add-gkd-1-s2");
    for (int s = 1; s <= 60; s++)
        fprintf(f, "{\"time\":%.3f,\"role\":\"learner\",\"id\":0,\"step\":%d,\"values\":"
                   "{\"length/mean\":5,\"overlap/teacher\":0.7,\"kl/teacher_student\":0.3}}\n",
                t0 + 2 * s, s);
    fprintf(f, "{\"time\":%.3f,\"role\":\"launcher\",\"id\":0,\"step\":0,\"values\":"
               "{\"event\":\"start\"}}\n", t0);
    fprintf(f, "{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":0,\"values\":"
               "{\"eval/accuracy\":0.3}}\n", t0 + 1);
    fprintf(f, "{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":50,\"values\":"
               "{\"eval/accuracy\":0.5}}\n", t0 + 101);
    fprintf(f, "{\"time\":%.3f,\"role\":\"eval\",\"id\":0,\"step\":60,\"values\":"
               "{\"eval/accuracy\":0.56,\"eval/final\":1}}\n", t0 + 125);
    fprintf(f, "{\"time\":%.3f,\"role\":\"launcher\",\"id\":0,\"step\":0,\"values\":"
               "{\"event\":\"finished\"}}\n", t0 + 126);
    fclose(f);
    /* a run directory without metrics, and two reference models (one unreadable) */
    char *p = ap_sprintf("%s/add-opd-s1", s_dir);
    AP_ASSERT(ap_mkdirs(p) == 0);
    free(p);
    p = ap_sprintf("%s/teacher", s_dir);
    AP_ASSERT(ap_mkdirs(p) == 0);
    free(p);
    p = ap_sprintf("%s/teacher/sft.json", s_dir);
    const char *tj = "{\"steps\":10,\"accuracy\":1.0,\"heldout\":256}\n";
    AP_ASSERT(ap_file_write_atomic(p, tj, strlen(tj)) == 0);
    free(p);
    p = ap_sprintf("%s/student", s_dir);
    AP_ASSERT(ap_mkdirs(p) == 0);
    free(p);
    p = ap_sprintf("%s/student/sft.json", s_dir);
    AP_ASSERT(ap_file_write_atomic(p, "{\"accuracy\": oops", 17) == 0);
    free(p);
}

int main(void) {
    snprintf(s_dir, sizeof s_dir, "%s", ap_test_tmpdir("report"));
    s_write_runs();
    char *r[6], *teacher = ap_sprintf("add=%s/teacher", s_dir), *cold = ap_sprintf("add=%s/student", s_dir);
    char *curves = ap_sprintf("%s/curves", s_dir);
    const char *names[] = {"add-sft-s1", "add-sft-s2", "add-gkd-1-s1", "add-gkd-1-s2/", "add-opd-s1"};
    for (int i = 0; i < 5; i++) r[i] = ap_sprintf("%s/%s", s_dir, names[i]);
    const char *argv[] = {"report", r[0], r[1], r[2], r[3], r[4], "--steps", "50,100",
                          "--minutes", "0.05,1,2", "--teacher", teacher, "--cold", cold,
                          "--curves", curves};
    char *out;
    int rc = s_report(&out, (int)AP_COUNT(argv), argv);
    AP_CHECK(rc == 0, "exit %d", rc);
    printf("%s", out);
    /* steps: sft 0.5/0.4 at 50 (mean 0.45, sd 0.0707), final 0.6/0.8; gkd-1 at 50: 0.7 (first
     * evaluation at or after 50 is step 52) and 0.5; at 100 only seed 1 got there */
    s_expect(out, "| add | sft | 2 | 0.450 ± 0.071 | 0.700 ± 0.141 | 0.700 ± 0.141 | 100 ± 0 | 0.600 / 0.800 |");
    s_expect(out, "| add | gkd-1 | 2 | 0.600 ± 0.141 | 0.900 (1/2) | 0.730 ± 0.240 | 80 ± 28 | 0.900 / 0.560 |");
    /* minutes: by 0.05 min (3 s) sft has nothing, gkd-1 the step-0 evaluations; by 1 min seed 1
     * still has only step 0 (step 52 was written at 61 s); by 2 min seed 1 its final evaluation
     * (0.9, at 104 s), seed 2 its step 50 (0.5; its final came at 125 s) */
    s_expect(out, "| add | sft | 2 | — | 0.700 ± 0.141 | 0.700 ± 0.141 | 100 ± 0 | 0.20 ± 0.00 |");
    s_expect(out, "| add | gkd-1 | 2 | 0.300 ± 0.000 | 0.300 ± 0.000 | 0.700 ± 0.283 | 80 ± 28 | 1.83 ± 0.24 |");
    /* monitors: seed 1's last 20% (steps 81-100) has length 6, kl 0.1; seed 2 (steps 49-60) 5 and
     * 0.3; staleness only null (absent), srpo/sd_frac absent: "—" */
    s_expect(out, "| add | gkd-1 | 5.500 ± 0.707 | — | — | 0.600 ± 0.141 | 0.200 ± 0.141 | — | — |");
    s_expect(out, "| add | sft | — | — | — | — | — | — | — |");
    s_expect(out, "| add | teacher | 1.000 | 256 |");
    s_expect(out, "| add | cold start | — | — |");
    s_expect(out, "- **add**: gkd-1 0.730 ± 0.240 = 73% of the teacher's 1.000 (below 90%); baseline sft 0.700 ± 0.141 (beaten)");
    s_expect(out, "Runs read: 4 (1 unreadable, skipped); malformed metrics records skipped: 4.");
    free(out);

    /* curves: one file per group, step-0 point of gkd-1 = 0.3 at 1 s */
    char *cp = ap_sprintf("%s/add-gkd-1/metrics.jsonl", curves), *text = NULL;
    AP_CHECK(ap_file_read(cp, &text, NULL) == 0, "%s: %s", cp, ap_errmsg());
    if (text) {
        AP_CHECK(strstr(text, "\"step\":0,\"values\":{\"eval/accuracy\":0.300000,\"report/runs\":2}"),
                 "curve lacks the step-0 mean: %s", text);
        AP_CHECK(strstr(text, "\"step\":50,\"values\":{\"eval/accuracy\":0.600000,\"report/runs\":2}"),
                 "curve lacks the step-50 mean: %s", text);
        AP_CHECK(strstr(text, "\"event\":\"start\""), "curve lacks its start record");
    }
    free(text), free(cp);
    cp = ap_sprintf("%s/add-sft/metrics.jsonl", curves);
    AP_CHECK(ap_path_exists(cp), "%s missing", cp);
    free(cp);

    /* usage errors: 2; nothing readable: 1 */
    const char *none[] = {"report"};
    AP_CHECK(s_report(&out, 1, none) == 2, "no runs: not a usage error");
    free(out);
    const char *badsteps[] = {"report", r[0], "--steps", "10,x"};
    AP_CHECK(s_report(&out, 4, badsteps) == 2, "--steps 10,x accepted");
    free(out);
    const char *badtail[] = {"report", r[0], "--tail", "0"};
    AP_CHECK(s_report(&out, 4, badtail) == 2, "--tail 0 accepted");
    free(out);
    const char *badref[] = {"report", r[0], "--teacher", "nodir"};
    AP_CHECK(s_report(&out, 4, badref) == 2, "--teacher without = accepted");
    free(out);
    const char *unreadable[] = {"report", r[4]};
    AP_CHECK(s_report(&out, 2, unreadable) == 1, "no readable run: not exit 1");
    free(out);
    /* default steps: 25/50/100% of the longest run */
    const char *defaults[] = {"report", r[0]};
    AP_CHECK(s_report(&out, 2, defaults) == 0, "one sft run");
    s_expect(out, "| step 25 | step 50 | step 100 |");
    free(out);

    for (int i = 0; i < 5; i++) free(r[i]);
    free(teacher), free(cold), free(curves);
    return ap_test_result();
}
