#!/usr/bin/env bash
# The main-job command. For now it builds vilau and reports what it runs on; the
# synthetic train-and-generate demo replaces this once the model exists.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"

vilau_setup
"$vilau_build_dir/tools/vilau" info
