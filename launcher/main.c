/* main.c: `apprentice SUBCOMMAND ...` dispatch. Every process of a run is this executable. */
#include <stdio.h>
#include <string.h>

#include "apprentice/blas.h"
#include "apprentice/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} s_command_t;

static const s_command_t s_commands[] = {
    {"launch", ap_cmd_launch, "start a whole experiment from one YAML config and supervise it"},
    {"plot", ap_cmd_plot, "draw the curves of one or more run directories to PNG (gnuplot)"},
    {"report", ap_cmd_report, "markdown tables of runs: accuracy at fixed steps and time, monitors"},
    {"config", ap_cmd_config, "print the resolved config (defaults, file, --set overrides)"},
    {"sft", ap_cmd_sft, "supervised training: cold start, privileged hints, sequence-level KD"},
    {"eval", ap_cmd_eval, "held-out greedy accuracy and pass@k of a checkpoint (one JSON line)"},
    {"sample", ap_cmd_sample, "sample completions for prompts from the command line or stdin"},
    {"vocab", ap_cmd_vocab, "build the character vocabulary file a config's task needs"},
    {"bench", ap_cmd_bench, "benchmarks (train, sample, objectives, buffer, weights): JSON lines"},
    {"keygen", ap_cmd_keygen, "make a CURVE key pair for security.curve"},
    {"actor", ap_cmd_actor, "role: sample groups of completions, verify, push to the buffer"},
    {"teacher", ap_cmd_teacher, "role: score completions with a teacher or self-teacher"},
    {"buffer", ap_cmd_buffer, "role: the generation/replay buffer between actors and learner"},
    {"learner", ap_cmd_learner, "role: objectives, backward, AdamW, weight publication"},
};

static void s_usage(FILE *out) {
    fprintf(out, "usage: apprentice SUBCOMMAND [options]   (apprentice SUBCOMMAND --help)\n\n");
    fprintf(out, "subcommands:\n");
    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++)
        fprintf(out, "  %-8s %s\n", s_commands[i].name, s_commands[i].help);
}

int main(int argc, char **argv) {
    ap_blas_set_threads(1); /* one OpenBLAS thread per process unless a command says otherwise */
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        s_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++)
        if (!strcmp(argv[1], s_commands[i].name)) return s_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "apprentice: unknown subcommand '%s'\n\n", argv[1]);
    s_usage(stderr);
    return 2;
}
