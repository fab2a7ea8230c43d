# Third-party libraries, all from Debian's packages (scripts/install-deps.sh).

find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)

# oneDNN: the plain library. (Debian's dnnl-config.cmake insists on OpenCL, which we do not use.)
find_library(TERN_DNNL_LIB NAMES dnnl REQUIRED)
find_path(TERN_DNNL_INCLUDE oneapi/dnnl/dnnl.hpp REQUIRED)
add_library(tern_dnnl INTERFACE)
target_link_libraries(tern_dnnl INTERFACE ${TERN_DNNL_LIB})
target_include_directories(tern_dnnl SYSTEM INTERFACE ${TERN_DNNL_INCLUDE})
set(TERN_DNNL tern_dnnl)

find_package(GTest REQUIRED)
find_package(Protobuf REQUIRED)  # checkpoints and configs (proto/)
find_package(Boost REQUIRED)  # Asio (header-only) for the tcp backend and ternrun
find_package(MPI COMPONENTS CXX)  # optional (C API through the CXX target): the mpi backend builds when Open MPI is present
