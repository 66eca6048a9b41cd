# ccache in front of the compiler. Precompiled headers need two sloppiness flags or
# ccache refuses to cache any translation unit that uses them.
if(VILAU_USE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  find_program(VILAU_CCACHE ccache)
  if(VILAU_CCACHE)
    set(CMAKE_CXX_COMPILER_LAUNCHER
        ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
        ${VILAU_CCACHE})
    message(STATUS "vilau: compiling through ${VILAU_CCACHE}")
  else()
    message(STATUS "vilau: ccache not found; rebuilds will not be cached (apt-get install ccache)")
  endif()
endif()
