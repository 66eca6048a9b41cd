#!/usr/bin/env bash
# The demo pipeline (scripts/demo.sh runs it after the set-up; ctest runs a shortened one):
#   demo_pipeline.sh VILAU_BINARY RUN_DIR
# Run from the repository root. VILAU_DEMO_QUICK=1: fewer pictures and steps, no targets.
# VILAU_DEMO_SEED=N: another world, other initial weights and other samples, to see how much
# the metrics move from seed to seed (unset: the shipped run's seeds).
set -euo pipefail
vilau="$1"
run="$2"
# Decoding 32-pixel pictures takes the data loader little time, so LibTorch gets every core
# (on the 2-core machine two threads train 1.5 times as fast as one); past four the
# demo's small matrices gain nothing.
cores=$(nproc)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$((cores < 4 ? cores : 4))}"
if [ "${VILAU_DEMO_QUICK:-0}" = 1 ]; then
  count=48 tower_steps=10 unified_steps=10 candidates=2 check=()
else
  count=3000 tower_steps=2400 unified_steps=3600 candidates=16 check=(--check)
fi
seed="${VILAU_DEMO_SEED:-0}"
# Unset, the stages keep the config's own train.seed, as the shipped run did.
train_seed=()
if [ -n "${VILAU_DEMO_SEED:-}" ]; then train_seed=(--set "train.seed=$VILAU_DEMO_SEED"); fi
start=$SECONDS
log() { printf '[vilau] %s\n' "$*" >&2; }
step() { log "step $1/9: $2 ($((SECONDS - start)) s so far)"; }
rm -rf "$run"
mkdir -p "$run"

step 1 "synthesising the world"
"$vilau" data synth --out "$run/data" --size 32 --count "$count" --seed "$seed"

step 2 "training the tokenizer"
{
  cat tests/reference/data/corpus.txt
  python3 -c 'import json, sys
for path in sys.argv[1:]:
    for line in open(path):
        row = json.loads(line)
        if "caption" in row: print(row["caption"])
        for turn in row.get("conversations", []): print(turn["value"].replace("<image>", "").strip())
' "$run/data/train_captions.jsonl" "$run/data/train_vqa.jsonl"
} >"$run/corpus.txt"
"$vilau" tokenizer train --corpus "$run/corpus.txt" --out "$run/tokenizer" --vocab-size 512 \
  --template-lines 1000

step 3 "training the tower"
"$vilau" train --config configs/demo/tower.yaml \
  --set "train.output_dir=$run/tower" --set "train.tokenizer=$run/tokenizer" \
  --set "train.max_steps=$tower_steps" "${train_seed[@]}" \
  --set "data.datasets=[\"path=$run/data/train_captions.jsonl, format=captions, task=tower\"]"

step 4 "training the unified model on text-to-image and VQA"
"$vilau" train --config configs/demo/unified.yaml \
  --set "train.output_dir=$run/unified" --set "train.init=$run/tower/export" \
  --set "train.max_steps=$unified_steps" "${train_seed[@]}" \
  --set "data.datasets=[\"path=$run/data/train_captions.jsonl, format=captions, task=t2i, weight=4, uncond=0.1\", \"path=$run/data/train_vqa.jsonl, format=llava, task=understanding\"]"

model="$run/unified/export"
# CFG 3 is the official scale; the plausibility cut keeps it from lifting codes the
# conditional model rules out, which plain CFG 3 does on a model this small.
step 5 "drawing $candidates candidates per held-out prompt with CFG 3"
"$vilau" generate --model "$model" --prompts "$run/data/eval_prompts.jsonl" \
  --out "$run/candidates" --cfg 3 --cfg-plausibility 0.3 --num-images "$candidates" --seed "$seed" --batch 8

step 6 "the model answers questions about its candidates and keeps the one it agrees with"
"$vilau" demo pick --model "$model" --prompts "$run/data/eval_prompts.jsonl" \
  --candidates "$run/candidates" --samples "$candidates" --out "$run/generated"

step 7 "answering the held-out questions"
"$vilau" chat --model "$model" --questions "$run/data/eval_vqa.jsonl" \
  --answers "$run/answers.jsonl" --temperature 0 --max-new-tokens 8 --wrap-images

step 8 "scoring and writing the report"
"$vilau" demo report --run "$run" --model "$model" "${check[@]}" >"$run/metrics.out"
step 9 "metrics (also in $run/metrics.json; report in $run/report.md)"
cat "$run/metrics.out"
log "demo finished in $((SECONDS - start)) s"
