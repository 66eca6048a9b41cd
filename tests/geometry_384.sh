#!/bin/sh
# The 384 px geometry end to end on a tiny-width model (tests/data/configs/tiny-384.yaml):
# a folder written by `vilau init` is read back, an image is generated at 384 px, encoded
# to 27 x 27 x 16 codes, decoded back to 384 px and answered about.
# Usage: geometry_384.sh VILAU CONFIG WORKDIR
set -eu
vilau=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
"$vilau" init --preset "$config" --out "$work/model" --seed 1 >/dev/null 2>&1
"$vilau" generate --model "$work/model" --prompt "a red fox" --seed 2 --out "$work/gen" >/dev/null
"$vilau" encode --model "$work/model" --image "$work/gen/sample_000.png" >"$work/codes.json"
"$vilau" reconstruct --model "$work/model" --image "$work/gen/sample_000.png" \
  --out "$work/reconstructed.png" >/dev/null
"$vilau" chat --model "$work/model" --image "$work/gen/sample_000.png" --question "What is it?" \
  --max-new-tokens 2 --json >"$work/answer.json"
python3 - "$work" <<'PY'
import json, struct, sys
work = sys.argv[1]
def png_size(path):
    with open(path, "rb") as f:
        return struct.unpack(">II", f.read(24)[16:24])
codes = json.load(open(work + "/codes.json"))["codes"]
shape = (len(codes), len(codes[0]), len(codes[0][0]))
assert shape == (27, 27, 16), f"codes {shape}, expected (27, 27, 16)"
for name in ("gen/sample_000.png", "reconstructed.png"):
    assert png_size(f"{work}/{name}") == (384, 384), f"{name}: {png_size(f'{work}/{name}')}"
json.load(open(work + "/answer.json"))
print("ok: 384 px images, 27x27x16 codes, an answer")
PY
