/* cmd_sft.c: `apprentice sft CONFIG [--set key=value]...`: supervised training of a model on
 * the config's task (tasks/sft.h): a cold-start teacher or student, hint-conditioned training,
 * or sequence-level KD from sft.teacher. Resumes from the run directory's last checkpoint when
 * rerun; SIGINT/SIGTERM checkpoint and stop (rerun to continue).
 *
 *   apprentice sft configs/sft-teacher-addition.yaml
 *   apprentice sft configs/sft-student-addition.yaml --set sft.steps=500 --set run.name=s500
 *
 * stderr: start-up lines and a progress line (step/total, loss, tokens/s, held-out accuracy,
 * ETA); stdout: one JSON summary line at the end (also written to sft.out/sft.json). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/blas.h"
#include "apprentice/cli.h"
#include "apprentice/config.h"
#include "tasks/sft.h"

static volatile sig_atomic_t s_stop = 0;

static void s_on_signal(int sig) {
    (void)sig;
    s_stop = 1;
}

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice sft CONFIG.yaml [--set key=value]... [--quiet]\n"
            "Supervised training on the config's task (sft: section; docs/CONFIG.md).\n"
            "  --set key=value  override one config key, e.g. --set sft.steps=500\n"
            "  --quiet          no progress line or summary\n"
            "Writes run.dir/run.name (config.yaml, metrics.jsonl, ckpt/step-N, latest) and the\n"
            "final model to sft.out; rerunning resumes from the last checkpoint.\n");
}

int ap_cmd_sft(int argc, char **argv) {
    static const struct option opts[] = {{"set", required_argument, 0, 's'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char **sets = ap_calloc((size_t)argc, sizeof *sets);
    int nsets = 0, quiet = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "s:qh", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            sets[nsets++] = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            s_usage(stdout);
            free(sets);
            return 0;
        default:
            s_usage(stderr);
            free(sets);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        s_usage(stderr);
        free(sets);
        return 2;
    }
    ap_log_set_role("sft", 0);
    ap_config_t *cfg = ap_config_load(argv[optind], sets, nsets);
    free(sets);
    if (!cfg) {
        fprintf(stderr, "apprentice sft: %s\n", ap_errmsg());
        return 1;
    }
    ap_blas_set_threads(cfg->model.blas_threads);
    ap_sft_t *s = ap_sft_new(cfg, quiet ? AP_SFT_QUIET : 0);
    if (!s) {
        fprintf(stderr, "apprentice sft: %s\n", ap_errmsg());
        ap_config_destroy(&cfg);
        return 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    ap_sft_set_stop_flag(s, &s_stop);
    int rc = ap_sft_run(s) < 0 ? 1 : 0;
    if (rc) fprintf(stderr, "\napprentice sft: %s\n", ap_errmsg());
    ap_sft_destroy(&s);
    ap_config_destroy(&cfg);
    return rc;
}
