# Finds the four OpenCV modules vilau uses from Debian's per-module -dev packages, which
# carry no OpenCVConfig.cmake. Defines VilauOpenCV_FOUND and the target vilau_opencv.
find_path(VilauOpenCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4)

set(_vilau_ocv_libs)
set(_vilau_ocv_vars VilauOpenCV_INCLUDE_DIR)
foreach(_module IN LISTS VILAU_OPENCV_MODULES)
  find_library(VilauOpenCV_${_module}_LIBRARY opencv_${_module})
  mark_as_advanced(VilauOpenCV_${_module}_LIBRARY)
  list(APPEND _vilau_ocv_vars VilauOpenCV_${_module}_LIBRARY)
  list(APPEND _vilau_ocv_libs ${VilauOpenCV_${_module}_LIBRARY})
endforeach()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(VilauOpenCV REQUIRED_VARS ${_vilau_ocv_vars})

if(VilauOpenCV_FOUND AND NOT TARGET vilau_opencv)
  add_library(vilau_opencv INTERFACE)
  target_include_directories(vilau_opencv SYSTEM INTERFACE "${VilauOpenCV_INCLUDE_DIR}")
  target_link_libraries(vilau_opencv INTERFACE ${_vilau_ocv_libs})
endif()
mark_as_advanced(VilauOpenCV_INCLUDE_DIR)
