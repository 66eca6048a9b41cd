#!/usr/bin/env bash
# The test command: installs what is missing (apt packages, torch in .venv), builds a
# Release build with ccache and a precompiled header, and runs every test with ctest.
# Extra arguments go to ctest, e.g. scripts/test.sh -R Config
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"

start=$SECONDS
vilau_setup
vilau_log "running ctest"
# ctest already runs one test per core; LibTorch's own threads on top would oversubscribe.
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" ctest --test-dir "$vilau_build_dir" --output-on-failure -j "$vilau_jobs" "$@"
vilau_log "done in $((SECONDS - start)) s"
