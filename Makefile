# The two commands a new user needs: `make demo` and `make test`. Both install what is missing.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all deps configure build test sanitize demo bench clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Everything: unit, multiprocess and slow tests. `ctest -L unit` in the build dir runs the fast ones.
test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# The unit tests built with AddressSanitizer and UndefinedBehaviorSanitizer (RelWithDebInfo, in
# build-sanitize): a memory error, a leak or undefined behaviour fails it. The MPI tests run without
# leak checking: Open MPI keeps what MPI_Init allocated, in plugins it has unloaded by exit.
SANITIZE_DIR ?= build-sanitize
sanitize: deps
	@cmake -S . -B $(SANITIZE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_SANITIZE=address,undefined \
	  $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(SANITIZE_DIR) -j $(JOBS) --target tern_tests
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(SANITIZE_DIR)/tests/tern_tests --gtest_brief=1 --gtest_filter='-Mpi*'
	@ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(SANITIZE_DIR)/tests/tern_tests --gtest_brief=1 --gtest_filter='Mpi*'

# Two data-parallel ranks under ternrun (tcp backend, shared memory on one host) train the CNN.
demo: build
	@$(BUILD_DIR)/launch/ternrun -n 2 $(BUILD_DIR)/examples/tern-train --model cnn --dataset fashion-mnist --epochs 3 \
	  --compress dgc:ratio=0.001,warmup_epochs=1 --lr 0.1

bench: configure
	@scripts/install-deps.sh --bench
	@cmake --build $(BUILD_DIR) -j $(JOBS)
	@$(BUILD_DIR)/bench/train_throughput
	@python3 bench/allreduce.py --build $(BUILD_DIR)

clean:
	@rm -rf $(BUILD_DIR)
