#!/usr/bin/env bash
# The CUDA build recipe (docs/performance.md): on a GPU machine whose python3 holds a CUDA
# torch, build vilau against that torch's LibTorch, run the test suite, then every speed
# benchmark next to the eager PyTorch baseline. Results (JSON) go to RESULTS_DIR.
#
#   scripts/gpu_check.sh [RESULTS_DIR]        (default runs/gpu)
#
# Without a package registry, C++ dependencies come from a folder of Debian packages:
# GPU_DEPS (default .gpu-deps) holds a copy of the shared gpu-deps bundle (install.sh, debs/,
# ocvmin) and extra/ with libarchive and the Gloo headers, which that bundle lacks
# (`apt-get download libarchive13 libarchive-dev libgloo-dev libnettle8 libxml2 libicu72
# liblz4-1 libacl1` on any Debian 12 machine).
set -euo pipefail
results="${1:-runs/gpu}"
deps="${GPU_DEPS:-.gpu-deps}"
build="${BUILD_DIR:-build-cuda}"
jobs="$(nproc)"
mkdir -p "$results"
log() { printf '[gpu_check] %s\n' "$*" >&2; }

if [ -x "$deps/install.sh" ]; then
  [ -f "$deps/prefix/env.sh" ] || "$deps/install.sh" "$PWD/$deps/prefix"
  # shellcheck disable=SC1091
  source "$deps/prefix/env.sh"
fi
if [ -d "$deps/extra" ]; then
  extra="$PWD/$deps/extra/root"
  if [ ! -d "$extra" ]; then
    for deb in "$deps"/extra/*.deb; do dpkg-deb -x "$deb" "$extra"; done
  fi
  export CMAKE_PREFIX_PATH="$extra/usr:${CMAKE_PREFIX_PATH:-}"
  export LD_LIBRARY_PATH="$extra/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export CPATH="$extra/usr/include:${CPATH:-}"
fi
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA torch"; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))' \
  | tee "$results/device.txt"

log "configure and build ($build, -j$jobs)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;${CMAKE_PREFIX_PATH:-}" >"$results/cmake.log"
cmake --build "$build" -j"$jobs" >"$results/build.log"
vilau="$build/tools/vilau"
"$vilau" info --json >"$results/info.json"

log "tests (InferStatic.CudaGraphReplayGivesTheEagerCodes runs only here)"
OMP_NUM_THREADS=1 ctest --test-dir "$build" -j"$jobs" --output-on-failure >"$results/ctest.log" 2>&1 \
  || log "some tests failed: $results/ctest.log"
tail -3 "$results/ctest.log" >&2

log "benchmarks (7b-256 random weights, bf16)"
bench() { local name="$1"; shift; "$vilau" bench "$@" >"$results/$name.json" || log "$name failed"; }
bench generate_b1 generate --preset 7b-256 --device cuda --batch 1 --repeat 3 --eager python3
bench generate_b1_eager_steps generate --preset 7b-256 --device cuda --batch 1 --repeat 3 \
  --cuda-graphs off
bench generate_b8 generate --preset 7b-256 --device cuda --batch 8 --repeat 2 --eager python3
bench decode decode --preset 7b-256 --device cuda --batch 1,16 --repeat 2 --eager python3
bench decode_eager_steps decode --preset 7b-256 --device cuda --batch 1,16 --repeat 2 \
  --cuda-graphs off
# ~1 B trainable parameters: 7b-256 with 4 LLM layers (plus the depth transformer).
bench train_1b train --preset 7b-256 --llm-layers 4 --device cuda --batch 8 --seq-len 2048 \
  --steps 10 --eager python3
bench train_1b_ckpt train --preset 7b-256 --llm-layers 4 --device cuda --batch 16 --seq-len 2048 \
  --steps 10 --activation-checkpointing
bench load load "$results/load_test.safetensors" --create-gb 4
rm -f "$results/load_test.safetensors"
log "done: $results"
