#!/usr/bin/env bash
# Per-rank memory of data-parallel training on CPU (Gloo), measured by `vilau bench train`
# on 1, 2 and 4 local ranks at ZeRO 0-3, next to what `vilau plan` predicts for the same
# run. Prints one JSON object per run, then a table (docs/training.md "Measured memory
# per rank" records its output).
#
#   scripts/bench_memory.sh [build-dir] [preset]      (defaults: build, bench-200m)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
preset="${2:-bench-200m}"
vilau="$build/tools/vilau"
torchrun="${TORCHRUN:-$root/.venv/bin/torchrun}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
run=(--preset "$preset" --batch 1 --seq-len 64 --dtype fp32)
for world in 1 2 4; do
  for zero in 0 1 2 3; do
    OMP_NUM_THREADS=1 "$torchrun" --standalone --nproc-per-node "$world" --no-python \
      "$vilau" bench train "${run[@]}" --steps 2 --warmup 1 --zero-stage "$zero" \
      >"$out/bench-$world-$zero.json" 2>"$out/bench-$world-$zero.log" ||
      { cat "$out/bench-$world-$zero.log" >&2; exit 1; }
    "$vilau" plan --preset "$preset" --world-size "$world" --zero-stage "$zero" \
      --micro-batch 1 --seq-len 64 --dtype fp32 >"$out/plan-$world-$zero.json"
  done
done
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = {}
for world in (1, 2, 4):
    for zero in range(4):
        bench = json.load(open(os.path.join(out, f"bench-{world}-{zero}.json")))
        plan = json.load(open(os.path.join(out, f"plan-{world}-{zero}.json")))["bytes_per_rank"]
        peak = max(r["peak_resident_bytes_in_steps"] for r in bench["ranks"])
        r0 = bench["ranks"][0]
        rows[world, zero] = (peak, plan["total"], r0, plan)
        print(json.dumps({"world_size": world, "zero_stage": zero, "measured_peak": peak,
                          "held": r0, "plan": plan}))
gib = lambda b: b / 2**30
print("\n| ZeRO | ranks | measured peak/rank GiB | plan total GiB | held: params / grads / optimizer GiB | plan: params / grads / optimizer GiB | drop from 1 rank, measured / plan GiB |")
print("|---|---|---|---|---|---|---|")
for zero in range(4):
    for world in (1, 2, 4):
        peak, total, held, plan = rows[world, zero]
        drop_m = rows[1, zero][0] - peak
        drop_p = rows[1, zero][1] - total
        print(f"| {zero} | {world} | {gib(peak):.2f} | {gib(total):.2f} | "
              f"{gib(held['parameter_bytes']):.2f} / {gib(held['gradient_bytes']):.2f} / {gib(held['optimizer_state_bytes']):.2f} | "
              f"{gib(plan['parameters']):.2f} / {gib(plan['gradients']):.2f} / {gib(plan['optimizer_state']):.2f} | "
              f"{gib(drop_m):.2f} / {gib(drop_p):.2f} |")
PY
