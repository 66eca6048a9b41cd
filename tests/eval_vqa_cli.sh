#!/bin/sh
# `vilau eval vqa` end to end on the tiny random model (its answers are arbitrary, so the
# checks are on structure): answering in batches, the outputs, resuming an interrupted run,
# and offline scoring of the same answers giving the same metrics.
# Usage: eval_vqa_cli.sh VILAU MODEL_DIR DATA_DIR OUT_DIR
set -eu
cli=$1
model=$2
data=$3
out=$4
rm -rf "$out"
mkdir -p "$out"
run() {
  "$cli" eval vqa --model "$model" --questions "$data/tiny_questions.jsonl" --benchmark vqav2 \
    --annotations "$data/tiny_annotations.json" --out "$out/run" --max-new-tokens 3 "$@"
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

run --batch 3 >"$out/model.json"
for f in answers.jsonl lmms_eval_samples.jsonl; do
  [ "$(wc -l <"$out/run/$f")" -eq 4 ] || fail "$f has $(wc -l <"$out/run/$f") lines, not 4"
done
[ "$(grep -c '"question_id"' "$out/run/submission.json")" -eq 4 ] || fail "submission.json"
grep -q '"count": 4' "$out/run/results.json" || fail "results.json lacks the count"
grep -q 'Answer the question using a single word or phrase.' "$out/run/answers.jsonl" ||
  fail "the default VQAv2 suffix is not in the prompts"

# A second run finds every answer and changes nothing.
cp "$out/run/answers.jsonl" "$out/answers.first"
run --batch 3 >"$out/again.json" 2>"$out/again.log"
grep -q "4 answered before, 0 to go" "$out/again.log" || fail "no resume: $(cat "$out/again.log")"
cmp "$out/answers.first" "$out/run/answers.jsonl" || fail "answers changed on resume"
cmp "$out/model.json" "$out/again.json" || fail "metrics changed on resume"

# Interrupted after two answers, in the middle of the third line.
head -n 2 "$out/answers.first" >"$out/run/answers.jsonl"
printf '{"question_id": 10' >>"$out/run/answers.jsonl"
run >"$out/resumed.json" 2>"$out/resumed.log"
grep -q "2 answered before, 2 to go" "$out/resumed.log" || fail "$(cat "$out/resumed.log")"
[ "$(wc -l <"$out/run/answers.jsonl")" -eq 4 ] || fail "resumed answers.jsonl"
grep -o '"question_id":[0-9]*' "$out/run/answers.jsonl" | tr '\n' ' ' >"$out/ids"
[ "$(cat "$out/ids")" = '"question_id":1001 "question_id":1002 "question_id":1003 "question_id":1004 ' ] ||
  fail "answers not in question order: $(cat "$out/ids")"

# Scoring the answers file offline gives the metrics the run printed.
"$cli" eval vqa --answers "$out/run/answers.jsonl" --questions "$data/tiny_questions.jsonl" \
  --benchmark vqav2 --annotations "$data/tiny_annotations.json" >"$out/offline.json"
cmp "$out/resumed.json" "$out/offline.json" || fail "offline metrics differ"
cat "$out/offline.json"
