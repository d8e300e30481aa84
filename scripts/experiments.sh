#!/usr/bin/env bash
# experiments.sh: the experiment matrix of docs/RESULTS.md "## Experiments" from one command:
# on 3-digit addition and on 3-digit x 1-digit multiplication, from the same cold-start student
# and the same teacher (scripts/coldstart.sh), every method below with the same learner-step
# budget (run.max_steps), the same wall-clock budget (run.max_minutes) and the same batch size,
# for each seed; then `apprentice report` regenerates the tables of docs/RESULTS.md
# "## Experiments" and `apprentice plot` the figures under docs/results/.
#
#   scripts/experiments.sh           run what is missing of the matrix, then the report
#   scripts/experiments.sh report    only regenerate the tables and the figures
#   scripts/experiments.sh tune      the learning-rate grid (addition, seed 1) behind the recipes
#   scripts/experiments.sh list      print the runs of the matrix and their state
#
# Methods: sft (continued SFT, `apprentice sft` from the student: the baseline), kd (supervised
# KD, lambda = 0), gkd-0.5 and gkd-1 (GKD, beta 0.5, lambda = 0.5 and 1), opd, grpo, opsd, srpo,
# hybrid (GRPO + GKD). A method's group size G and learning rate are its recipe (tuned by
# `tune`); batch size, step and time budgets, warm-up, schedule and evaluation are common.
#
# Resume: a run whose directory holds the launcher's final event "finished" (for sft: a complete
# model directory, RUN/model/sft.json) is skipped; any other run directory is removed and the run
# restarted from scratch (a fresh wall clock keeps the time axis comparable across runs).
# Runs go one at a time (they share the machine's 2 cores); logs in ROOT/logs/NAME.log.
#
# Environment: AP_BIN (default build/apprentice), EXP_ROOT (runs/exp), TASKS ("addition
# multiplication"), SEEDS ("1 2 3"), METHODS (all), STEPS (1000), MINUTES (3.5), RESULTS
# (docs/RESULTS.md), FIGURES (docs/results).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${AP_BIN:-build/apprentice}"
root="${EXP_ROOT:-runs/exp}"
read -r -a tasks <<< "${TASKS:-addition multiplication}"
read -r -a seeds <<< "${SEEDS:-1 2 3}"
read -r -a methods <<< "${METHODS:-sft kd gkd-0.5 gkd-1 opd grpo opsd srpo hybrid}"
steps="${STEPS:-1000}"     # run.max_steps, every method (sft.steps for the baseline)
minutes="${MINUTES:-3.5}"  # run.max_minutes, every method
batch=128                  # trajectories (sequences) per optimizer step, every method
warmup=100                 # linear warm-up steps, then cosine to 0.1 x lr at max_steps
eval_every=50              # held-out evaluation every 5% of the step budget
results="${RESULTS:-docs/RESULTS.md}"
figures="${FIGURES:-docs/results}"

# The recipe of a method: its base config, group size G and learning rate (`tune` chose them).
# G = 1 wherever the objective needs no group (more distinct prompts per step); G = 4 where
# group advantages need siblings (grpo, srpo and the hybrid's GRPO part).
recipe() {
    extra=()
    case "$1" in
    sft) cfg=configs/sft.yaml G=1 lr=2e-3 ;;
    kd) cfg=configs/kd.yaml G=1 lr=2e-3 ;;
    gkd-0.5) cfg=configs/gkd-0.5.yaml G=1 lr=2e-3 ;;
    gkd-1) cfg=configs/gkd-1.yaml G=1 lr=2e-3 ;;
    opd) cfg=configs/opd.yaml G=1 lr=2e-4 ;;
    grpo) cfg=configs/grpo.yaml G=4 lr=5e-4 ;;
    opsd) cfg=configs/opsd.yaml G=1 lr=1e-3 extra=(--set objective.opsd.clip_token_kl=inf) ;;
    srpo) cfg=configs/srpo.yaml G=4 lr=1e-3 ;;
    hybrid) cfg=configs/hybrid.yaml G=4 lr=1e-3 ;;
    *)
        echo "experiments.sh: unknown method '$1'" >&2
        exit 2
        ;;
    esac
}

task_sets() { # the task section and the models of a task (the same for every method)
    local t="$1"
    case "$t" in
    addition | multiplication) ;;
    *)
        echo "experiments.sh: unknown task '$t'" >&2
        exit 2
        ;;
    esac
    echo "--set task.kind=$t --set task.min_digits=3 --set task.max_digits=3" \
        "--set task.factor_min_digits=1 --set task.factor_max_digits=1" \
        "--set task.heldout_size=256 --set task.heldout_seed=0"
}

is_done() { # run directory, method
    if [ "$2" = sft ]; then
        [ -f "$1/model/sft.json" ]
    else
        [ -f "$1/metrics.jsonl" ] && grep -q '"role":"launcher".*"event":"finished"' "$1/metrics.jsonl"
    fi
}

# run_one DIR_ROOT NAME TASK METHOD SEED LR: one run, fresh, with its log in DIR_ROOT/logs/.
run_one() {
    local dr="$1" name="$2" t="$3" m="$4" seed="$5" lr_="$6"
    local dir="$dr/$name" log="$dr/logs/$name.log"
    recipe "$m"
    # shellcheck disable=SC2206 # EXTRA: more --set words for every run (tune probes)
    local more=(${EXTRA:-})
    # shellcheck disable=SC2046 # task_sets prints words meant to split
    local common=(--set "run.dir=$dr" --set "run.name=$name" --set "run.seed=$seed"
        --set "task.seed=$seed" --set "run.max_steps=$steps" --set "run.max_minutes=$minutes"
        --set "optimizer.lr=$lr_" --set "optimizer.warmup_steps=$warmup"
        --set optimizer.schedule=cosine --set optimizer.min_lr_ratio=0.1
        --set "model.student=models/student-$t" --set sampling.temperature=1
        --set sampling.max_new_tokens=8 $(task_sets "$t") "${extra[@]}" "${more[@]}")
    rm -rf "$dir"
    mkdir -p "$dr/logs"
    local start rc=0
    start=$(date +%s)
    echo "experiments: $name ($m, lr $lr_, G $G, seed $seed) ... log $log" >&2
    if [ "$m" = sft ]; then
        "$bin" sft "$cfg" "${common[@]}" --set "sft.init=models/student-$t" \
            --set "sft.out=$dir/model" --set sft.data=task --set "sft.steps=$steps" \
            --set "sft.batch=$batch" --set "sft.eval_every=$eval_every" \
            --set sft.privileged_fraction=0 --set "sft.checkpoint_every=$steps" \
            > "$log" 2>&1 || rc=$?
    else
        "$bin" launch "$cfg" "${common[@]}" --set "model.teacher=models/teacher-$t" \
            --set "batch.size=$batch" --set "sampling.group_size=$G" \
            --set "actors.eval_every=$eval_every" --set actors.eval_size=256 \
            --set learner.checkpoint_every=0 --set learner.rollouts_every=50 \
            --set teacher.external=2 \
            > "$log" 2>&1 || rc=$?
    fi
    echo "experiments: $name exit $rc after $(($(date +%s) - start)) s" >&2
    is_done "$dir" "$m" || echo "experiments: $name did not finish (see $log)" >&2
}

matrix_names() { # TASK: the run names of a task's block
    local t="$1" m s
    for m in "${methods[@]}"; do
        for s in "${seeds[@]}"; do echo "$t-$m-s$s"; done
    done
}

# Seed-major: a matrix cut short still has every (task, method) with the first seeds; the
# tables and figures are regenerated after every (seed, task) block.
run_matrix() {
    local t m s
    for s in "${seeds[@]}"; do
        for t in "${tasks[@]}"; do
            for m in "${methods[@]}"; do
                local name="$t-$m-s$s"
                recipe "$m"
                if is_done "$root/$name" "$m"; then
                    echo "experiments: $name finished: skipped" >&2
                    continue
                fi
                run_one "$root" "$name" "$t" "$m" "$s" "$lr"
            done
            report
        done
    done
}

# report: the tables (between the markers of docs/RESULTS.md) and the figures (mean curves over
# seeds, one line per method, one figure per task and x axis).
report() {
    local t n tables tmp runs=() refs=()
    for t in "${tasks[@]}"; do
        for n in $(matrix_names "$t"); do
            if [ -d "$root/$n" ]; then runs+=("$root/$n"); fi
        done
        refs+=(--teacher "$t=models/teacher-$t" --cold "$t=models/student-$t")
    done
    if [ ${#runs[@]} -eq 0 ]; then
        echo "experiments: no runs under $root yet" >&2
        return 0
    fi
    tables=$(mktemp)
    rm -rf "$root/curves"
    "$bin" report "${runs[@]}" --steps "$((steps / 4)),$((steps / 2)),$steps" \
        --minutes "$(minute_marks)" "${refs[@]}" --curves "$root/curves" > "$tables"
    for t in "${tasks[@]}"; do
        compgen -G "$root/curves/$t-*" > /dev/null || continue
        rm -rf "${figures:?}/$t"
        mkdir -p "$figures/$t"
        "$bin" plot "$root/curves/$t-"* --out "$figures/$t" > /dev/null
        rm -rf "${figures:?}/$t/data"
        echo "experiments: figures of $t in $figures/$t/" >&2
    done
    if ! grep -q '^<!-- experiments:tables:begin -->' "$results"; then
        echo "experiments: $results has no <!-- experiments:tables:begin --> marker: tables in $tables" >&2
        return 1
    fi
    tmp=$(mktemp)
    awk -v f="$tables" '
        /^<!-- experiments:tables:begin -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
        /^<!-- experiments:tables:end -->/ { skip = 0 }
        !skip { print }' "$results" > "$tmp"
    cat "$tmp" > "$results"
    rm -f "$tmp" "$tables"
    echo "experiments: tables written into $results" >&2
}

minute_marks() { # MINUTES/6, /3, 2/3 and the whole budget: "0.5,1,2,3" for 3 minutes
    awk -v m="$minutes" 'BEGIN { printf "%.3g,%.3g,%.3g,%.3g", m / 6, m / 3, 2 * m / 3, m }'
}

# tune: the learning-rate grid behind recipe(), on addition, seed 1, the matrix's budgets.
tune() {
    local dr="${TUNE_ROOT:-runs/exp-tune}" grid m l
    grid="${GRID:-sft:5e-4,1e-3,2e-3 gkd-1:5e-4,1e-3,2e-3 opd:2e-4,5e-4,1e-3 grpo:2e-4,5e-4,1e-3 srpo:2e-4,5e-4,1e-3 opsd:2e-4,5e-4,1e-3}"
    for entry in $grid; do
        m="${entry%%:*}"
        l="${entry#*:}"
        for x in ${l//,/ }; do
            local name="addition-$m-lr$x${TAG:-}"
            if is_done "$dr/$name" "$m"; then continue; fi
            run_one "$dr" "$name" addition "$m" 1 "$x"
        done
    done
    local runs=()
    for d in "$dr"/addition-*; do [ -d "$d" ] && runs+=("$d"); done
    "$bin" report "${runs[@]}" --steps "$((steps / 4)),$((steps / 2)),$steps" \
        --minutes "$(minute_marks)" --teacher addition=models/teacher-addition \
        --cold addition=models/student-addition
}

list() {
    local t m s
    for t in "${tasks[@]}"; do
        for m in "${methods[@]}"; do
            for s in "${seeds[@]}"; do
                local n="$t-$m-s$s" st=missing
                [ -d "$root/$n" ] && st=unfinished
                is_done "$root/$n" "$m" && st=finished
                echo "$n $st"
            done
        done
    done
}

if [ ! -x "$bin" ]; then
    echo "experiments.sh: $bin not found (cmake -S . -B build && cmake --build build -j2)" >&2
    exit 1
fi
for t in "${tasks[@]}"; do
    for r in teacher student; do
        if [ ! -f "models/$r-$t/sft.json" ]; then
            echo "experiments.sh: models/$r-$t missing: scripts/coldstart.sh $t" >&2
            exit 1
        fi
    done
done
case "${1:-run}" in
run) run_matrix ;;
report) report ;;
tune) tune ;;
list) list ;;
-h | --help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' ;;
*)
    echo "experiments.sh: unknown command '$1' (run, report, tune, list)" >&2
    exit 2
    ;;
esac
