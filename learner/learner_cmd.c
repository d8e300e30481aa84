/* learner_cmd.c: `apprentice learner --run DIR --id 0`: the learner role process (DESIGN.md,
 * "Processes, command lines, files"). Loads RUN/config.yaml, logs as learner[0], appends metrics
 * to RUN/metrics/learner-0.jsonl, resumes from RUN/latest when there is one, serves until
 * run.max_steps / run.max_minutes; SIGINT/SIGTERM: checkpoint and exit 0. Exit 1 on a failure
 * (the launcher restarts it; the restart resumes from the newest checkpoint with gen + 1). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"
#include "apprentice/learner.h"
#include "apprentice/rundir.h"
#include "apprentice/transport.h"

static volatile sig_atomic_t s_stop = 0;

static void s_on_signal(int sig) {
    (void)sig;
    s_stop = 1;
}

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice learner --run RUN_DIR [--id 0]\n"
            "The learner role: batches from the buffer (endpoints.buffer_learner), objectives,\n"
            "AdamW, weights published on endpoints.weights / weights_pub, checkpoints in\n"
            "RUN_DIR/ckpt (resumed from RUN_DIR/latest), rollouts in RUN_DIR/rollouts.jsonl.\n"
            "Normally started by `apprentice launch`. SIGINT/SIGTERM: checkpoint and exit 0.\n");
}

int ap_cmd_learner(int argc, char **argv) {
    static const struct option opts[] = {{"run", required_argument, 0, 'r'},
                                         {"id", required_argument, 0, 'i'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *run = NULL;
    int id = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "r:i:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            run = optarg;
            break;
        case 'i':
            id = atoi(optarg);
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (!run || optind != argc || id != 0) {
        if (id != 0) fprintf(stderr, "apprentice learner: there is one learner: --id 0\n");
        s_usage(stderr);
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    ap_proc_t proc;
    if (ap_proc_open(&proc, run, "learner", id) < 0) {
        fprintf(stderr, "apprentice learner: %s\n", ap_errmsg());
        return 1;
    }
    const ap_config_t *cfg = proc.cfg;
    ap_net_opts_t no = {.curve = cfg->security.curve};
    ap_net_t *net = NULL;
    ap_learner_t *L = NULL;
    int rc = 1;
    if (no.curve &&
        ap_curve_load(cfg->security.keys_dir, "learner", no.public_key, no.secret_key) < 0)
        goto done;
    if (!(net = ap_net_new(&no))) goto done;
    ap_learner_opts_t lo = {
        .cfg = cfg, .run_dir = proc.dir, .net = net, .metrics = proc.metrics, .name = "learner-0"};
    if (!(L = ap_learner_new(&lo))) goto done;
    ap_learner_set_stop_flag(L, &s_stop);
    rc = ap_learner_run(L) < 0 ? 1 : 0;
done:
    if (rc) ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
    ap_learner_destroy(&L);
    ap_net_destroy(&net);
    ap_proc_close(&proc);
    return rc;
}
