#!/usr/bin/env bash
# coldstart.sh [TASK]: make (or reuse) the cold-start teacher and student of a task with
# `apprentice sft`, then print their held-out accuracies with `apprentice eval`.
#
#   TASK = quickstart (default)  models/teacher-quickstart, models/student-quickstart (a few minutes)
#          addition              models/teacher-addition, models/student-addition (3-digit addition)
#          multiplication        models/teacher-multiplication, models/student-multiplication
#          all                   every pair above
#
# Configs: configs/sft-teacher-TASK.yaml, configs/sft-student-TASK.yaml, configs/eval-TASK.yaml.
# A model directory holding sft.json (written last by `apprentice sft`) is complete and reused;
# otherwise sft runs, resuming from runs/sft-ROLE-TASK/ when an earlier attempt left a
# checkpoint. Teacher and student share models/vocab-TASK/vocab.json (sft.vocab): the script
# refuses a pair whose vocabularies differ. Logs: runs/sft-ROLE-TASK.log.
#
# Environment: AP_BIN (default build/apprentice, built with scripts/build.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

task="${1:-quickstart}"
case "$task" in
quickstart | addition | multiplication) tasks=("$task") ;;
all) tasks=(quickstart addition multiplication) ;;
-h | --help)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "coldstart.sh: unknown task '$task' (quickstart, addition, multiplication, all)" >&2
    exit 2
    ;;
esac

bin="${AP_BIN:-build/apprentice}"
if [ ! -x "$bin" ]; then
    echo "coldstart.sh: $bin not found: building" >&2
    scripts/build.sh
    bin=build/apprentice
fi

complete() { [ -f "$1/sft.json" ] && [ -f "$1/model.safetensors" ] && [ -f "$1/config.json" ] && [ -f "$1/vocab.json" ]; }
vocab_hash() { sed -n 's/.*"hash": *"\([0-9a-f]*\)".*/\1/p' "$1/vocab.json"; }

for t in "${tasks[@]}"; do
    mkdir -p runs
    for role in teacher student; do
        dir="models/$role-$t"
        cfg="configs/sft-$role-$t.yaml"
        if complete "$dir"; then
            echo "coldstart: $dir is complete: reused ($(head -c 160 "$dir/sft.json")...)" >&2
            continue
        fi
        echo "coldstart: training $dir with $cfg (log runs/sft-$role-$t.log)" >&2
        start=$(date +%s)
        "$bin" sft "$cfg" 2> >(tee "runs/sft-$role-$t.log" >&2)
        echo "coldstart: $dir done in $(($(date +%s) - start)) s" >&2
    done
    th="$(vocab_hash "models/teacher-$t")"
    sh="$(vocab_hash "models/student-$t")"
    if [ -z "$th" ] || [ "$th" != "$sh" ]; then
        echo "coldstart: vocabulary mismatch: models/teacher-$t has '$th', models/student-$t has '$sh':" \
            "both must be made from models/vocab-$t (remove the stale model directory and rerun)" >&2
        exit 1
    fi
    echo "coldstart: $t: teacher and student share vocabulary $th" >&2
    eval_cfg="configs/eval-$t.yaml"
    echo "== $t: held-out accuracy (greedy; pass@k at sampling.temperature) =="
    "$bin" eval --model "models/teacher-$t" --config "$eval_cfg"
    "$bin" eval --model "models/student-$t" --config "$eval_cfg"
    "$bin" eval --model "models/student-$t" --config "$eval_cfg" --privileged
done
