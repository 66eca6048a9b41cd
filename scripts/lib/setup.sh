# Sourced by scripts/test.sh and scripts/demo.sh: installs what is missing, then
# configures and builds vilau. Every step is skipped when already done, so a second run
# only rebuilds what changed.
#
# Environment:
#   VILAU_TORCH_SPEC   pip spec for torch in .venv (default torch==2.13.0, the CPU build)
#   CMAKE_PREFIX_PATH  if it already holds a LibTorch (a zip or a CUDA torch), .venv is skipped
#   VILAU_BUILD_DIR    build directory (default build/)
#   VILAU_JOBS         parallel compile jobs (default: all cores)

vilau_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vilau_build_dir="${VILAU_BUILD_DIR:-$vilau_root/build}"
vilau_jobs="${VILAU_JOBS:-$(nproc)}"

vilau_log() { printf '[vilau] %s\n' "$*" >&2; }

vilau_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    vilau_log "need root to run: $*"
    return 1
  fi
}

vilau_install_system_packages() {
  local wanted=(libsentencepiece-dev libopencv-core-dev libopencv-imgproc-dev
    libopencv-imgcodecs-dev libopencv-videoio-dev nlohmann-json3-dev libspdlog-dev
    libyaml-cpp-dev libcli11-dev libgtest-dev libgmock-dev libarchive-dev libgloo-dev pkg-config)
  command -v g++ >/dev/null 2>&1 || wanted+=(g++ make)
  command -v cmake >/dev/null 2>&1 || wanted+=(cmake)
  command -v ninja >/dev/null 2>&1 || wanted+=(ninja-build)
  command -v ccache >/dev/null 2>&1 || wanted+=(ccache)
  command -v git >/dev/null 2>&1 || wanted+=(git)
  python3 -m venv --help >/dev/null 2>&1 || wanted+=(python3 python3-venv)

  local missing=() pkg
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    vilau_log "missing packages and no apt-get: ${missing[*]}; install them and re-run"
    return 1
  fi
  vilau_log "installing: ${missing[*]}"
  vilau_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  vilau_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# True when CMAKE_PREFIX_PATH or Torch_DIR already points at a LibTorch.
vilau_user_libtorch() {
  local entry
  [ -n "${Torch_DIR:-}" ] && [ -f "$Torch_DIR/TorchConfig.cmake" ] && return 0
  IFS=':;' read -r -a entries <<<"${CMAKE_PREFIX_PATH:-}"
  for entry in "${entries[@]}"; do
    [ -z "$entry" ] && continue
    for candidate in "$entry/Torch" "$entry/share/cmake/Torch" "$entry/lib/cmake/Torch"; do
      [ -f "$candidate/TorchConfig.cmake" ] && return 0
    done
  done
  return 1
}

vilau_install_torch() {
  if vilau_user_libtorch; then
    vilau_log "using the LibTorch on CMAKE_PREFIX_PATH / Torch_DIR; .venv not touched"
    return 0
  fi
  local venv="$vilau_root/.venv" spec="${VILAU_TORCH_SPEC:-torch==2.13.0}"
  [ -x "$venv/bin/python3" ] || { vilau_log "creating .venv"; python3 -m venv "$venv"; }
  # The stamp records the spec installed, so changing VILAU_TORCH_SPEC reinstalls.
  if [ "$(cat "$venv/.vilau-torch-spec" 2>/dev/null)" != "$spec" ] ||
    ! "$venv/bin/python3" -c "import torch" >/dev/null 2>&1; then
    vilau_log "pip install $spec into .venv"
    "$venv/bin/python3" -m pip install -q "$spec"
    printf '%s' "$spec" >"$venv/.vilau-torch-spec"
  fi
}

vilau_build() {
  local generator=()
  # Keep whatever generator an existing build directory was configured with.
  if [ ! -f "$vilau_build_dir/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
  fi
  vilau_log "configuring $vilau_build_dir (Release)"
  cmake -S "$vilau_root" -B "$vilau_build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
  vilau_log "building with $vilau_jobs jobs"
  cmake --build "$vilau_build_dir" -j "$vilau_jobs"
}

vilau_setup() {
  vilau_install_system_packages
  vilau_install_torch
  vilau_build
}
