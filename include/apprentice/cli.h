/* cli.h: the subcommands of the one `apprentice` executable (DESIGN.md: all roles live in one
 * executable so that one build serves every machine).
 *
 * Each subcommand is `int ap_cmd_NAME(int argc, char **argv)`, argv[0] being the subcommand
 * name; it parses its own options (getopt_long), prints its usage for --help and returns the
 * process exit code (0 ok, 1 failure, 2 usage error). The table in launcher/main.c lists them.
 */
#ifndef APPRENTICE_CLI_H
#define APPRENTICE_CLI_H

int ap_cmd_launch(int argc, char **argv);  /* launcher/: start and supervise a run */
int ap_cmd_plot(int argc, char **argv);    /* launcher/: gnuplot curves of runs */
int ap_cmd_config(int argc, char **argv);  /* launcher/: print a resolved config */
int ap_cmd_report(int argc, char **argv);  /* launcher/: markdown result tables of runs */
int ap_cmd_actor(int argc, char **argv);   /* actors/: student, dataset or eval actor */
int ap_cmd_teacher(int argc, char **argv); /* teacher/: teacher worker */
int ap_cmd_buffer(int argc, char **argv);  /* buffer/: generation/replay buffer */
int ap_cmd_learner(int argc, char **argv); /* learner/: the optimizer loop */
int ap_cmd_keygen(int argc, char **argv);  /* net/: CURVE key pairs */
int ap_cmd_sft(int argc, char **argv);     /* tasks/: supervised cold start, seq-level KD */
int ap_cmd_eval(int argc, char **argv);    /* tasks/: held-out accuracy, pass@k */
int ap_cmd_sample(int argc, char **argv);  /* tasks/: completions for given prompts */
int ap_cmd_vocab(int argc, char **argv);   /* tasks/: build the vocabulary file of a config */
int ap_cmd_bench(int argc, char **argv);   /* bench/: benchmarks, JSON lines out */

#endif
