# inferd — plain Makefile.
#   make              bin/inferd and build/libinferd.a
#   make test         every test (unit + CLI end-to-end), each with a timeout
#   make SAN=address  ASan+UBSan build (in build-address/); add `test` to run
#   make SAN=thread   TSan build (in build-thread/)
#   make fuzz         libFuzzer targets for the GGUF and safetensors parsers
#   make deps         install the Debian packages the build and tests need
#   make bench        benchmarks (not part of make test)

CC      ?= cc
SAN     ?=
OPT     ?= -O2
CFLAGS  := -std=c11 $(OPT) -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -D_GNU_SOURCE -Iinclude -Isrc -Iserver -pthread -MMD -MP $(EXTRA_CFLAGS)
LDLIBS  := -lmicrohttpd -ljansson -lpcre2-8 -lutf8proc -lm -pthread

ifeq ($(SAN),)
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
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB     := $(BUILD)/libinferd.a
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test deps fuzz bench clean
.SECONDARY:

all: $(BIN)/inferd $(LIB)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

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
FAULT_SRC := src/exec.c src/fault.c $(wildcard tools/*.c server/*.c)
FAULT_OBJ := $(FAULT_SRC:%.c=$(BUILD)/faults/%.o)
FAULTS    := $(BUILD)/tests/inferd-faults

$(BUILD)/faults/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DINFERD_FAULTS -c $< -o $@

$(FAULTS): $(FAULT_OBJ) $(filter-out $(BUILD)/src/exec.o $(BUILD)/src/fault.o,$(LIB_OBJ))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/unit/testlib.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

test: $(BIN)/inferd $(FAULTS) $(TEST_BIN)
	@BUILD=$(BUILD) BIN=$(BIN) tests/run.sh $(TEST_BIN)

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

clean:
	rm -rf build build-address build-thread build-fuzz bin

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(FAULT_OBJ:.o=.d) $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d)
