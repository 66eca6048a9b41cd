# Finds every third-party dependency. A missing one stops configure with the package
# to install, instead of an obscure error deep inside a find module.

function(vilau_require found name hint)
  if(NOT ${found})
    message(FATAL_ERROR "vilau: ${name} not found. ${hint}")
  endif()
endfunction()

# --- LibTorch -------------------------------------------------------------------------
# Order: Torch_DIR / CMAKE_PREFIX_PATH set by the user (a LibTorch zip or a CUDA torch),
# then the torch installed in the checkout's .venv by scripts/test.sh.
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  set(_venv_python "${PROJECT_SOURCE_DIR}/.venv/bin/python3")
  if(EXISTS "${_venv_python}")
    execute_process(
      COMMAND "${_venv_python}" -c "import torch; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_torch_prefix)
      list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
      find_package(Torch QUIET)
    endif()
  endif()
endif()
vilau_require(Torch_FOUND "LibTorch"
  "Run scripts/test.sh (it installs torch into .venv), or pass -DCMAKE_PREFIX_PATH=/path/to/libtorch \
(or the output of: python3 -c 'import torch;print(torch.utils.cmake_prefix_path)').")
if(Torch_VERSION VERSION_LESS 2.0)
  message(FATAL_ERROR "vilau: LibTorch ${Torch_VERSION} found in ${Torch_DIR}; 2.x is required.")
endif()

# vilau is C++17, but LibTorch 2.14 and newer refuse to compile below C++20.
if(Torch_VERSION VERSION_GREATER_EQUAL 2.14 AND CMAKE_CXX_STANDARD LESS 20)
  set(CMAKE_CXX_STANDARD 20)
  message(STATUS "vilau: LibTorch ${Torch_VERSION} requires C++20; building as C++20")
endif()

# CUDA-only code (NCCL process groups, CUDA graphs) compiles only against a CUDA LibTorch.
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  set(VILAU_WITH_CUDA ON)
  # A pip-installed CUDA torch keeps the CUDA library headers (cusparse.h, cublas_v2.h,
  # nccl.h, ...) that ATen/cuda includes in site-packages/nvidia/*/include, not in the
  # toolkit, which may lack some of them.
  file(GLOB _vilau_nvidia_includes "${Torch_DIR}/../../../../nvidia/*/include")
  if(_vilau_nvidia_includes)
    set_property(TARGET torch APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES ${_vilau_nvidia_includes})
  endif()
else()
  set(VILAU_WITH_CUDA OFF)
endif()
message(STATUS "vilau: LibTorch ${Torch_VERSION} from ${Torch_DIR} (CUDA: ${VILAU_WITH_CUDA})")

# --- OpenCV ---------------------------------------------------------------------------
# A user's own OpenCV build ships OpenCVConfig.cmake; Debian ships it only in the heavy
# libopencv-dev meta package, so fall back to the per-module -dev packages.
set(VILAU_OPENCV_MODULES core imgproc imgcodecs videoio)
find_package(OpenCV QUIET CONFIG COMPONENTS ${VILAU_OPENCV_MODULES})
if(OpenCV_FOUND)
  add_library(vilau_opencv INTERFACE)
  target_include_directories(vilau_opencv SYSTEM INTERFACE ${OpenCV_INCLUDE_DIRS})
  target_link_libraries(vilau_opencv INTERFACE ${OpenCV_LIBS})
else()
  find_package(VilauOpenCV)
  vilau_require(VilauOpenCV_FOUND "OpenCV (${VILAU_OPENCV_MODULES})"
    "Install: apt-get install libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev \
libopencv-videoio-dev, or set OpenCV_DIR to a build that has those modules.")
endif()

# --- SentencePiece (Debian ships only pkg-config data) --------------------------------
find_package(SentencePiece)
vilau_require(SentencePiece_FOUND "SentencePiece" "Install: apt-get install libsentencepiece-dev")

# --- libarchive (webdataset tar shards) ----------------------------------------------
find_package(LibArchive REQUIRED)

# --- Gloo headers: pip LibTorch has Gloo built in but ships without its headers ---------
find_path(VILAU_GLOO_INCLUDE_DIR gloo/algorithm.h)
vilau_require(VILAU_GLOO_INCLUDE_DIR "Gloo headers" "Install: apt-get install libgloo-dev")

# --- Header and small libraries with CMake configs ------------------------------------
find_package(nlohmann_json 3.9 QUIET)
vilau_require(nlohmann_json_FOUND "nlohmann_json" "Install: apt-get install nlohmann-json3-dev")
find_package(spdlog QUIET)
vilau_require(spdlog_FOUND "spdlog" "Install: apt-get install libspdlog-dev")
find_package(yaml-cpp QUIET)
vilau_require(yaml-cpp_FOUND "yaml-cpp" "Install: apt-get install libyaml-cpp-dev")
find_package(CLI11 QUIET)
vilau_require(CLI11_FOUND "CLI11" "Install: apt-get install libcli11-dev")
if(VILAU_BUILD_TESTS)
  find_package(GTest QUIET)
  vilau_require(GTest_FOUND "GoogleTest" "Install: apt-get install libgtest-dev libgmock-dev \
(or configure with -DVILAU_BUILD_TESTS=OFF)")
endif()

# LibTorch 2.x ships its own, newer fmt headers in its include directory, which would
# shadow the fmt that spdlog was built against (spdlog 1.10 needs fmt <= 9). A shim
# directory holding only a link to spdlog's fmt goes first on the include path.
if(TARGET fmt::fmt)
  get_target_property(_vilau_fmt_include fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
  list(GET _vilau_fmt_include 0 _vilau_fmt_include)
  set(VILAU_FMT_SHIM "${PROJECT_BINARY_DIR}/fmt-shim")
  file(MAKE_DIRECTORY "${VILAU_FMT_SHIM}")
  file(CREATE_LINK "${_vilau_fmt_include}/fmt" "${VILAU_FMT_SHIM}/fmt" SYMBOLIC)
  add_library(vilau_fmt_first INTERFACE)
  target_include_directories(vilau_fmt_first BEFORE INTERFACE "${VILAU_FMT_SHIM}")
  message(STATUS "vilau: fmt for spdlog from ${_vilau_fmt_include}")
else()
  add_library(vilau_fmt_first INTERFACE)
endif()

# yaml-cpp 0.7 exports a plain `yaml-cpp` target, 0.8 adds `yaml-cpp::yaml-cpp`.
if(TARGET yaml-cpp::yaml-cpp)
  set(VILAU_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(VILAU_YAML_TARGET yaml-cpp)
endif()
