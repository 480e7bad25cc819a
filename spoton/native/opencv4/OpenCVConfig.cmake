# Minimal OpenCV package config for distributions that split OpenCV into per-module
# -dev packages without the CMake config (Debian 12 ships OpenCVConfig.cmake only in
# the libopencv-dev metapackage: ~200 packages). spoton's `build-native` points
# OpenCV_DIR here to build boxmot's C++ trackers, which need core and imgproc only
# (libopencv-core-dev, libopencv-imgproc-dev). Defines an imported opencv_<module>
# target for every requested module whose library and headers are installed.
set(OpenCV_VERSION 4.6.0)
set(OpenCV_VERSION_MAJOR 4)
set(OpenCV_VERSION_MINOR 6)
set(OpenCV_VERSION_PATCH 0)
find_path(OpenCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4)
set(OpenCV_INCLUDE_DIRS "${OpenCV_INCLUDE_DIR}")
set(_ocv_components ${OpenCV_FIND_COMPONENTS})
if(NOT _ocv_components)
  set(_ocv_components core imgproc)
endif()
set(OpenCV_LIBS "")
set(OpenCV_FOUND TRUE)
foreach(_c IN LISTS _ocv_components)
  string(REGEX REPLACE "^opencv_" "" _c "${_c}")
  find_library(OpenCV_${_c}_LIBRARY NAMES opencv_${_c})
  if(OpenCV_${_c}_LIBRARY AND OpenCV_INCLUDE_DIR)
    if(NOT TARGET opencv_${_c})
      add_library(opencv_${_c} SHARED IMPORTED)
      set_target_properties(opencv_${_c} PROPERTIES
        IMPORTED_LOCATION "${OpenCV_${_c}_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${OpenCV_INCLUDE_DIR}")
    endif()
    list(APPEND OpenCV_LIBS opencv_${_c})
    set(OpenCV_${_c}_FOUND TRUE)
  else()
    set(OpenCV_${_c}_FOUND FALSE)
    if(OpenCV_FIND_REQUIRED_${_c})
      set(OpenCV_FOUND FALSE)
      set(OpenCV_NOT_FOUND_MESSAGE "OpenCV module ${_c} not found (install libopencv-${_c}-dev)")
    endif()
  endif()
endforeach()
