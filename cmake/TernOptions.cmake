# Build options shared by every target of ours: CUDA detection, sanitizers, warnings, ccache.

set(TERN_CUDA "AUTO" CACHE STRING "Build CUDA kernels: AUTO (if a toolkit is found), ON, OFF")
set_property(CACHE TERN_CUDA PROPERTY STRINGS AUTO ON OFF)
set(TERN_SANITIZE "" CACHE STRING "Comma-separated sanitizers, e.g. address,undefined")

# CUDA: detected now, used by later kernels. ON without a toolkit is an error, AUTO degrades.
set(TERN_HAVE_CUDA OFF)
if(NOT TERN_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  find_package(CUDAToolkit QUIET)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    set(TERN_HAVE_CUDA ON)
  elseif(TERN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TERN_CUDA=ON but no CUDA toolkit/compiler was found")
  endif()
endif()
message(STATUS "tern: CUDA ${TERN_HAVE_CUDA} (TERN_CUDA=${TERN_CUDA})")

find_program(TERN_CCACHE ccache)
if(TERN_CCACHE)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${TERN_CCACHE})
endif()

# Flags for our own targets only (third-party code keeps its own).
add_library(tern_flags INTERFACE)
# -fno-math-errno: sqrt without an errno branch, so optimizer loops vectorise (we never read errno
# after math calls).
target_compile_options(tern_flags INTERFACE -Wall -Wextra -Werror -fno-math-errno)
# GCC 12 at -O3 reports -Wrestrict inside libstdc++ for plain std::string concatenation
# ("accessing 9223372036854775810 or more bytes", GCC bug 105329): a false positive, kept off.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(tern_flags INTERFACE -Wno-restrict)
endif()
if(TERN_HAVE_CUDA)
  target_compile_definitions(tern_flags INTERFACE TERN_HAVE_CUDA=1)
endif()
if(TERN_SANITIZE)
  target_compile_options(tern_flags INTERFACE -fsanitize=${TERN_SANITIZE} -fno-omit-frame-pointer)
  target_link_options(tern_flags INTERFACE -fsanitize=${TERN_SANITIZE})
  # GCC warns that TSan cannot see std::atomic_thread_fence, which Boost.Asio's handlers use; the
  # warning would stop a -Werror build before a single test ran.
  if(TERN_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(tern_flags INTERFACE -Wno-tsan)
  endif()
endif()

# Our kernels are written to vectorise; without -march the compiler targets SSE2 only. Builds
# run on the machine that trains, so native is the default; set TERN_MARCH="" for a portable
# binary (oneDNN picks its own kernels at run time either way).
set(TERN_MARCH "native" CACHE STRING "-march for our code ('' for the compiler's default)")
if(TERN_MARCH)
  target_compile_options(tern_flags INTERFACE -march=${TERN_MARCH})
endif()
