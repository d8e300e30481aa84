#!/usr/bin/env bash
# test_sample.sh: `apprentice sample` output format and refusals, and the sft command line
# (progress line, summary, SIGINT checkpoint + resume, bad input). A tiny model is trained first
# with `apprentice sft` (a few seconds). Runs in tmp-sample/ under the build directory.
set -u
bin="${AP_BIN:?AP_BIN must point at the apprentice executable}"
dir="tmp-sample"
rm -rf "$dir" && mkdir -p "$dir"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# check NAME CONDITION-COMMAND...: run the condition, report its name
check() { local name="$1"; shift; if "$@"; then echo "ok: $name"; else fail "$name"; fi; }

cat > "$dir/tiny.yaml" <<EOF
run: {name: tiny, dir: $dir/runs, seed: 3}
task: {kind: addition, min_digits: 1, max_digits: 1, heldout_size: 10}
sampling: {max_new_tokens: 4, temperature: 1.0}
optimizer: {lr: 3e-3, warmup_steps: 5}
sft: {out: $dir/models/tiny, steps: 60, batch: 32, eval_every: 30, checkpoint_every: 30,
      hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 2, num_kv_heads: 2,
      max_positions: 32, privileged_fraction: 0.2}
EOF

# ---- sft: summary on stdout, progress on stderr, complete model directory ----
"$bin" sft "$dir/tiny.yaml" > "$dir/sft.out" 2> "$dir/sft.err"
check "sft exits 0" test $? -eq 0
check "sft summary line" grep -q '"steps":60.*"accuracy":' "$dir/sft.out"
check "sft progress line" grep -q 'sft 60/60 | loss [0-9.]* | .* tok/s | acc [0-9.]* (hint [0-9.]*) @60' "$dir/sft.err"
for f in config.json model.safetensors vocab.json sft.json; do
    check "model dir has $f" test -f "$dir/models/tiny/$f"
done
check "run dir: latest -> ckpt/step-60" grep -qx 'ckpt/step-60' "$dir/runs/tiny/latest"
check "metrics role sft" grep -q '"role":"sft".*"loss/sft"' "$dir/runs/tiny/metrics.jsonl"
check "metrics eval" grep -q '"eval/accuracy":.*"eval/accuracy_privileged"' "$dir/runs/tiny/metrics.jsonl"
check "config saved" test -f "$dir/runs/tiny/config.yaml"
model="$dir/models/tiny"

# ---- sample: one JSON line per completion ----
out="$("$bin" sample --model "$model" --n 3 1+2= 3+4=)"
check "sample exits 0" test $? -eq 0
check "3 completions x 2 prompts" test "$(echo "$out" | wc -l)" -eq 6
check "fields without config" bash -c "echo '$out' | grep -c '^{\"prompt\":\"[0-9+=]*\",\"completion\":\"[^\"]*\",\"mean_logprob\":-\\?[0-9.e-]*,\"tokens\":[0-9]*,\"finish\":\"\\(eos\\|length\\)\"}$' | grep -qx 6"
check "no verdict without config" bash -c "! echo '$out' | grep -q correct"

out="$("$bin" sample --model "$model" --config "$dir/tiny.yaml" --temperature 0 1+2= "$(printf '4+4=\t9')")"
check "sample with config exits 0" test $? -eq 0
check "verdict fields" bash -c "echo '$out' | head -1 | grep -q '\"answer\":\"3\",\"correct\":\(true\|false\),\"feedback\":\"'"
check "tab answer used" bash -c "echo '$out' | tail -1 | grep -q '\"prompt\":\"4+4=\".*\"answer\":\"9\"'"

g1="$("$bin" sample --model "$model" --temperature 0 --n 2 5+5=)"
g2="$("$bin" sample --model "$model" --temperature 0 --n 2 5+5=)"
check "greedy is deterministic" test "$g1" = "$g2"
check "greedy copies agree" test "$(echo "$g1" | sort -u | wc -l)" -eq 1

out="$(printf '1+1=\n\n2+2=\r\n' | "$bin" sample --model "$model" --config "$dir/tiny.yaml")"
check "stdin: one completion per non-empty line" test "$(echo "$out" | wc -l)" -eq 2
check "stdin: CR stripped, answer computed" bash -c "echo '$out' | tail -1 | grep -q '\"prompt\":\"2+2=\".*\"answer\":\"4\"'"

# ---- sample: bad input is named, counted, and the rest still runs ----
out="$("$bin" sample --model "$model" 1+1= 'x+1=' 2> "$dir/err")"
rc=$?
check "bad prompt: exit 1" test $rc -eq 1
check "bad prompt: named with origin and character" grep -q "argument 2: .*'x'.* not in the vocabulary" "$dir/err"
check "bad prompt: counted" grep -q '1 prompt refused' "$dir/err"
check "bad prompt: the good one still sampled" test "$(echo "$out" | wc -l)" -eq 1

"$bin" sample --model "$dir/nowhere" 1+1= 2> "$dir/err"
check "missing model dir: exit 1" test $? -eq 1
check "missing model dir: named" grep -q "nowhere: no such directory" "$dir/err"
"$bin" sample --model "$model" --config "$dir/nope.yaml" 1+1= 2> "$dir/err"
check "missing config: exit 1, named" bash -c "test $? -eq 1 && grep -q nope.yaml '$dir/err'"
"$bin" sample --model "$model" --set sampling.temprature=1 1+1= 2> "$dir/err"
check "config error: exit 1" test $? -eq 1
check "config error: key named" grep -q "temprature" "$dir/err"
"$bin" sample 1+1= 2> "$dir/err"
check "no --model: usage error" test $? -eq 2
"$bin" sample --model "$model" --temperature -1 1+1= 2> "$dir/err"
check "negative temperature refused" bash -c "test $? -eq 1 && grep -q -- '--temperature' '$dir/err'"
"$bin" sample --model "$model" --config "$dir/tiny.yaml" --set task.kind=reverse 1+1= 2> "$dir/err"
check "task the vocabulary cannot serve: refused" bash -c "test $? -eq 1 && grep -q 'lacks' '$dir/err'"

# ---- sft: bad input ----
"$bin" sft 2> "$dir/err"
check "sft without config: usage error" test $? -eq 2
"$bin" sft "$dir/nope.yaml" 2> "$dir/err"
check "sft missing config: exit 1, named" bash -c "test $? -eq 1 && grep -q nope.yaml '$dir/err'"
"$bin" sft "$dir/tiny.yaml" --set sft.stepz=3 2> "$dir/err"
check "sft unknown key: exit 1, named" bash -c "test $? -eq 1 && grep -q stepz '$dir/err'"
"$bin" sft "$dir/tiny.yaml" --set sft.init="$dir/nowhere" --set run.name=x 2> "$dir/err"
check "sft missing init: exit 1, named" bash -c "test $? -eq 1 && grep -q nowhere '$dir/err'"

# ---- sft: SIGINT checkpoints, a rerun resumes ----
"$bin" sft "$dir/tiny.yaml" --set run.name=long --set sft.out="$dir/models/long" \
    --set sft.steps=1000000 --set sft.checkpoint_every=1000000 --set sft.eval_every=0 \
    > /dev/null 2> "$dir/long.err" &
pid=$!
for _ in $(seq 1 100); do
    grep -q 'sft [0-9]*/1000000' "$dir/long.err" 2> /dev/null && break
    sleep 0.1
done
sleep 0.5
kill -INT "$pid"
wait "$pid"
check "SIGINT: exit 1" test $? -eq 1
check "SIGINT: says where it stopped" grep -q 'stopped at step [0-9]* (checkpointed' "$dir/long.err"
step="$(sed -n 's/.*stopped at step \([0-9]*\).*/\1/p' "$dir/long.err")"
check "SIGINT: checkpoint written" test -f "$dir/runs/long/ckpt/step-$step/training_state.safetensors"
"$bin" sft "$dir/tiny.yaml" --set run.name=long --set sft.out="$dir/models/long" \
    --set sft.steps=$((step + 5)) --set sft.eval_every=0 > "$dir/resume.out" 2> "$dir/resume.err"
check "rerun: exit 0" test $? -eq 0
check "rerun: resumed from the checkpoint" grep -q "resuming from .*step-$step (step $step)" "$dir/resume.err"
check "rerun: finished at the new step count" grep -q "\"steps\":$((step + 5))" "$dir/models/long/sft.json"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "all checks passed"
