/* actor_cmd.c: `apprentice actor --run DIR --id N [--mode student|dataset|eval] [--simulate]`:
 * an actor role process (DESIGN.md, "Processes, command lines, files"). Loads RUN/config.yaml,
 * logs as actor[N] / dataset[N] / eval[N], appends metrics to RUN/metrics/NAME.jsonl, runs until
 * SIGINT/SIGTERM (exit 0) or a failure (exit 1: the launcher restarts it). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "apprentice/actor.h"
#include "apprentice/base.h"
#include "apprentice/cli.h"
#include "apprentice/rundir.h"
#include "apprentice/transport.h"

static volatile sig_atomic_t s_stop = 0;

static void s_on_signal(int sig) {
    (void)sig;
    s_stop = 1;
}

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice actor --run RUN_DIR --id N [--mode student|dataset|eval] "
            "[--simulate]\n"
            "  student   sample groups of sampling.group_size completions with the newest\n"
            "            weights, verify them, push them to the buffer (default)\n"
            "  dataset   push gold (or, with actors.dataset_source: teacher, teacher-written)\n"
            "            completions: the off-policy side of GKD\n"
            "  eval      greedy accuracy and pass@k on the held-out set at new versions\n"
            "  --simulate  no model: random but valid groups, instantly (pipeline benchmark)\n"
            "Normally started by `apprentice launch`. SIGINT/SIGTERM: stop and exit 0.\n");
}

int ap_cmd_actor(int argc, char **argv) {
    static const struct option opts[] = {
        {"run", required_argument, 0, 'r'},  {"id", required_argument, 0, 'i'},
        {"mode", required_argument, 0, 'm'}, {"simulate", no_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    const char *run = NULL, *mode_name = "student";
    int id = -1, simulate = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "r:i:m:sh", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            run = optarg;
            break;
        case 'i':
            id = atoi(optarg);
            break;
        case 'm':
            mode_name = optarg;
            break;
        case 's':
            simulate = 1;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    ap_actor_mode_t mode;
    if (ap_actor_mode_parse(mode_name, &mode) < 0) {
        fprintf(stderr, "apprentice actor: %s\n", ap_errmsg());
        s_usage(stderr);
        return 2;
    }
    if (!run || id < 0 || optind != argc) {
        s_usage(stderr);
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    const char *role = mode == AP_ACTOR_STUDENT ? "actor" : ap_actor_mode_name(mode);
    ap_proc_t proc;
    if (ap_proc_open(&proc, run, role, id) < 0) {
        fprintf(stderr, "apprentice actor: %s\n", ap_errmsg());
        return 1;
    }
    const ap_config_t *cfg = proc.cfg;
    ap_net_opts_t no = {.curve = cfg->security.curve};
    ap_net_t *net = NULL;
    ap_actor_t *a = NULL;
    int rc = 1;
    char key_name[64];
    snprintf(key_name, sizeof key_name, "%s-%d", role, id);
    if (no.curve &&
        ap_curve_load(cfg->security.keys_dir, key_name, no.public_key, no.secret_key) < 0)
        goto done;
    if (!(net = ap_net_new(&no))) goto done;
    ap_actor_opts_t ao = {.cfg = cfg,
                          .run_dir = proc.dir,
                          .net = net,
                          .metrics = proc.metrics,
                          .mode = mode,
                          .id = id,
                          .simulate = simulate};
    if (!(a = ap_actor_new(&ao))) goto done;
    ap_actor_set_stop_flag(a, &s_stop);
    rc = ap_actor_run(a) < 0 ? 1 : 0;
done:
    if (rc) ap_log(AP_LOG_ERROR, "%s", ap_errmsg());
    ap_actor_destroy(&a);
    ap_net_destroy(&net);
    ap_proc_close(&proc);
    return rc;
}
