#!/usr/bin/env bash
# The main job on an embedded default: a synthetic world of coloured shapes that a small
# VILA-U learns to see and to draw, on a CPU, with nothing downloaded. After the set-up it
# runs scripts/lib/demo_pipeline.sh: synthesise the world, train the tokenizer, the tower
# and the unified model, draw held-out prompts with CFG, answer held-out questions, and
# write runs/demo/metrics.json, report.md and grid.png.
# Environment: VILAU_DEMO_DIR (default runs/demo), VILAU_DEMO_QUICK=1 for a shortened run
# without targets, VILAU_DEMO_SEED=N for a run with other seeds, plus everything
# scripts/lib/setup.sh reads.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"

vilau_setup
cd "$vilau_root"
bash scripts/lib/demo_pipeline.sh "$vilau_build_dir/tools/vilau" "${VILAU_DEMO_DIR:-runs/demo}"
