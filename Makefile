# The two commands a new user needs: `make demo` and `make test`. Both install what is missing.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all deps configure build test demo bench clean

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
