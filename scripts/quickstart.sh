#!/usr/bin/env bash
# quickstart.sh: from a fresh Debian 12 machine to a finished hybrid RL-distillation run:
#   1. install the missing Debian packages, 2. build, 3. make (or reuse) the quickstart's
#   cold-start teacher and student (scripts/coldstart.sh quickstart), 4. measure the student's
#   held-out accuracy, 5. run a short SRPO + GKD experiment with the full topology
#   (configs/quickstart.yaml: buffer, learner, 2 actors, external and self teachers, evaluator),
#   6. print the held-out accuracy before and after, and draw the curves.
# Extra arguments go to `apprentice launch` (e.g. --set run.max_steps=100).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh
bin=build/apprentice
AP_BIN="$bin" scripts/coldstart.sh quickstart

config=configs/quickstart.yaml
run_dir=runs/quickstart
before=$("$bin" eval --model models/student-quickstart --config "$config" --pass-k 0 |
    sed -n 's/.*"accuracy": *\([0-9.eE+-]*\).*/\1/p')
echo "quickstart: cold-start student held-out accuracy $before" >&2

rm -rf "$run_dir" # a fresh run each time (a relaunch of the same run would resume it)
"$bin" launch "$config" "$@"

final="$run_dir/$(head -n 1 "$run_dir/latest")" # the learner's final checkpoint
after=$("$bin" eval --model "$final" --config "$config" --pass-k 0 |
    sed -n 's/.*"accuracy": *\([0-9.eE+-]*\).*/\1/p')
"$bin" plot "$run_dir" > /dev/null
echo
echo "quickstart: held-out accuracy of the student: before $before, after ${after:-?}"
echo "quickstart: curves in $run_dir/plots/ (accuracy: $run_dir/plots/accuracy_steps.png)"
echo "quickstart: rollouts to read: $run_dir/rollouts.jsonl; metrics: $run_dir/metrics.jsonl"
