#!/usr/bin/env bash
# Builds the safetensors header fuzzer with clang and runs it for N seconds (default 60)
# on the seed corpus in tests/fuzz/corpus. New inputs that reach new code are added there
# only when you pass them on by hand; crashes are written to build-fuzz/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
command -v clang++ >/dev/null || { echo "fuzz.sh: needs clang (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
CXX=clang++ cmake -S "$root/tests/fuzz" -B "$root/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build-fuzz" -j "$(nproc)"
work="$root/build-fuzz/corpus"
mkdir -p "$work"
cp -n "$root"/tests/fuzz/corpus/* "$work"/ 2>/dev/null || true
cd "$root/build-fuzz"
./fuzz_safetensors_header -max_total_time="$seconds" -max_len=4096 "$work"
