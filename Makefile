# inferd — plain Makefile.
#   make              bin/inferd and build/libinferd.a
#   make test         every test (unit + CLI end-to-end), each with a timeout
#   make SAN=address  ASan+UBSan build (in build-address/); add `test` to run
#   make SAN=thread   TSan build (in build-thread/)
#   make fuzz         libFuzzer targets for the GGUF and safetensors parsers
#   make deps         install the Debian packages the build and tests need
#   make bench        benchmarks (not part of make test)
#   make bench-cpu    CPU pp/tg on real shapes (LLAMA_BENCH=... side by side)
#   make CUDA=1       with the CUDA backend (nvcc, cuBLAS), in build-cuda/
#   make CUDA=1 test-gpu   the GPU tests (they print SKIP without a GPU)
#   make test-neon    test_kernels cross-compiled for aarch64, run under qemu-user

CC      ?= cc
SAN     ?=
OPT     ?= -O2
CFLAGS  := -std=c11 $(OPT) -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -D_GNU_SOURCE -Iinclude -Isrc -Iserver -pthread -MMD -MP $(EXTRA_CFLAGS)
LDLIBS  := -lmicrohttpd -ljansson -lpcre2-8 -lutf8proc -lm -pthread

CUDA    ?=
CUDA_HOME ?= /usr/local/cuda
NVCC    ?= $(CUDA_HOME)/bin/nvcc
# sm_90 code for Hopper (H100/H200), PTX for any newer GPU to compile at load
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVFLAGS := -std=c++17 -O2 -g $(CUDA_ARCH) -Iinclude -Isrc --Werror all-warnings \
           -Xcompiler -Wall,-Wextra,-Werror -MMD -MP

ifneq ($(CUDA),)
  ifneq ($(SAN),)
    $(error CUDA=1 and SAN= do not combine (use compute-sanitizer for device code))
  endif
  BUILD := build-cuda
  BIN   := build-cuda/bin
  CFLAGS += -DINFERD_CUDA -I$(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++
else ifeq ($(SAN),)
  BUILD := build
  BIN   := bin
else
  BUILD := build-$(SAN)
  BIN   := $(BUILD)/bin
  ifeq ($(SAN),address)
    CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DINFERD_ASAN
    LDFLAGS += -fsanitize=address,undefined
  else ifeq ($(SAN),thread)
    CFLAGS  += -fsanitize=thread -DINFERD_TSAN
    LDFLAGS += -fsanitize=thread
  else
    $(error SAN must be address or thread)
  endif
endif

LIB_SRC := $(wildcard src/*.c src/cpu/*.c)
ifneq ($(CUDA),)
  LIB_SRC += $(wildcard src/cuda/*.c)
  CU_SRC  := $(wildcard src/cuda/*.cu)
endif
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
LIB     := $(BUILD)/libinferd.a
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test test-gpu test-neon bench-gpu deps fuzz bench bench-cpu clean
.SECONDARY:

all: $(BIN)/inferd $(LIB)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The CPU kernels' loops start on a 64-byte line. Where a loop of a
# kernel lands otherwise is chance, and it moved the kernels by up to 40%
# on Zen 4 (Q5_0 at 1 token: 6.4 or 4.5 ns per 256 products, Q8_0 3.8 or
# 3.0, from one line of code elsewhere in the file).
$(BUILD)/src/cpu/qmm.o $(BUILD)/src/cpu/ops.o: CFLAGS += -falign-loops=64

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

TOOL_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/*.c server/*.c))

$(BIN)/inferd: $(TOOL_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The fault-injection build, for the supervision tests only: the files with
# fault hooks (src/fault.h) again with -DINFERD_FAULTS, linked with the rest
# of the library. bin/inferd never contains them.
FAULT_SRC := src/exec.c src/fault.c $(wildcard tools/*.c server/*.c) $(if $(CUDA),src/cuda/backend_cuda.c)
FAULT_OBJ := $(FAULT_SRC:%.c=$(BUILD)/faults/%.o)
FAULTS    := $(BUILD)/tests/inferd-faults

$(BUILD)/faults/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DINFERD_FAULTS -c $< -o $@

$(FAULTS): $(FAULT_OBJ) $(filter-out $(BUILD)/src/exec.o $(BUILD)/src/fault.o $(BUILD)/src/cuda/backend_cuda.o,$(LIB_OBJ))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/unit/testlib.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

test: $(BIN)/inferd $(FAULTS) $(TEST_BIN)
	@BUILD=$(BUILD) BIN=$(BIN) tests/run.sh $(TEST_BIN)

# GPU tests: the CUDA backend against the references and the CPU. Build with
# CUDA=1; without a GPU the test prints SKIP (and checks the clear error).
# (inferd-faults carries the CUDA fault hook too: INFERD_CUDA_FAULT_STEP)
# test_grammar and test_mlx run their GPU parts too (constrained sampling
# beside device sampling; MLX weights on the device).
GPU_TESTS := $(BUILD)/tests/test_cuda $(BUILD)/tests/test_grammar $(BUILD)/tests/test_mlx
test-gpu: $(BIN)/inferd $(GPU_TESTS) $(FAULTS)
	@BUILD=$(BUILD) BIN=$(BIN) tests/run.sh $(GPU_TESTS)
	@cat $(BUILD)/tests/test_cuda.log

# GPU benchmark (bench/cuda/run.sh: models, ceilings, baselines, tables)
$(BUILD)/bench/cuda/bench_cuda: $(BUILD)/bench/cuda/bench_cuda.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench-gpu: $(BIN)/inferd $(BUILD)/bench/cuda/bench_cuda
	BUILD=$(BUILD) BIN=$(BIN) bench/cuda/run.sh

# The aarch64 kernels (src/cpu/qmm_neon.inc): test_kernels alone, static,
# with the Debian cross gcc, run under qemu-user twice: on a CPU model with
# dotprod (both NEON sets, bitwise equal) and on one without (baseline NEON,
# the dotprod set refused). testlib without jansson (no arm64 libraries);
# ops.c's portable exp and swiglu and sample.c's argmax run there too.
NEON_CC  ?= aarch64-linux-gnu-gcc
NEON_SRC := tests/unit/test_kernels.c tests/unit/testlib.c src/cpu/qmm.c src/dtype.c src/cpu/ops.c src/sample.c
NEON_DEP := $(NEON_SRC) $(wildcard src/*.h src/cpu/*.h src/cpu/*.inc) tests/unit/testlib.h
build-neon/test_kernels: $(NEON_DEP)
	@mkdir -p $(dir $@)
	$(NEON_CC) -std=c11 $(OPT) -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -D_GNU_SOURCE \
		-DTESTLIB_NO_JSON -Iinclude -Isrc -pthread -static -o $@ $(NEON_SRC) -lm

test-neon: build-neon/test_kernels
	qemu-aarch64 -cpu max build-neon/test_kernels
	qemu-aarch64 -cpu cortex-a53 build-neon/test_kernels

deps:
	.ci/deps

# libFuzzer needs clang; the seed corpora live in fuzz/corpus/.
FUZZ_CFLAGS := -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SECONDS ?= 60
fuzz: build-fuzz/fuzz_gguf build-fuzz/fuzz_safetensors
	@mkdir -p build-fuzz/corpus-gguf build-fuzz/corpus-st
	build-fuzz/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build-fuzz/corpus-gguf fuzz/corpus/gguf
	build-fuzz/fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build-fuzz/corpus-st fuzz/corpus/safetensors

build-fuzz/fuzz_%: fuzz/fuzz_%.c $(LIB_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ -ljansson -lpcre2-8 -lutf8proc -lm -pthread

BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench: $(BIN)/inferd $(BENCH_BIN)
	BUILD=$(BUILD) BIN=$(BIN) bench/run.sh
	BUILD=$(BUILD) BIN=$(BIN) bench/cpu.sh

# CPU pp/tg on generated 1B Llama and 0.5B Qwen files (Q8_0, Q4_K_M, F16);
# LLAMA_BENCH=/path/to/llama-bench adds llama.cpp side by side
bench-cpu: $(BIN)/inferd $(BENCH_BIN)
	BUILD=$(BUILD) BIN=$(BIN) bench/cpu.sh

clean:
	rm -rf build build-address build-thread build-cuda build-fuzz build-neon bin

-include $(LIB_OBJ:.o=.d) $(CU_SRC:%.cu=$(BUILD)/%.d) $(TOOL_OBJ:.o=.d) $(FAULT_OBJ:.o=.d) $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d)
