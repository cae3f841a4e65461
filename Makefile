# loco — one non-recursive Makefile.
#   make              build/loco
#   make test         every test (unit, integration, PyTorch reference, fuzz corpus replay)
#   make test-long    the slow scenarios
#   make check        the tests under SANITIZE=address,undefined
#   make install      PREFIX=/usr/local [DESTDIR=]: binary, systemd unit, man page
#   make bench        the benchmarks (tests/bench)
#   make clean
# Switches: SANITIZE=address,undefined  CUDA=1  V=1  NATIVE=0 (portable, no -march=native)

CC       ?= cc
NVCC     ?= /usr/local/cuda/bin/nvcc
PYTHON   ?= /usr/bin/python3
BUILD    ?= build
NATIVE   ?= 1

BLASDIR  := /usr/lib/x86_64-linux-gnu/openblas-openmp
CPPFLAGS := -I. -D_GNU_SOURCE -MMD -MP
# -ffp-contract=off: outer-step arithmetic must round the same way on every peer (ALGORITHMS.md).
CFLAGS   := -std=c11 -Wall -Wextra -O3 -g -fopenmp -ffp-contract=off -fno-strict-aliasing
LDFLAGS  := -fopenmp -L$(BLASDIR) -Wl,-rpath,$(BLASDIR)
LDLIBS   := -lopenblas -lzmq -lsodium -lcrypto -lmicrohttpd -lpthread -lm

ifeq ($(NATIVE),1)
CFLAGS   += -march=native
endif
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=$(SANITIZE)
BUILD    := build/san
endif
ifeq ($(CUDA),1)
CPPFLAGS += -DLOCO_CUDA -I/usr/local/cuda/include
LDFLAGS  += -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64
LDLIBS   += -lcublas -lcudart -lstdc++
NVFLAGS  := -O3 -std=c++17 -I. -lineinfo -Xcompiler -Wall,-Wextra,-ffp-contract=off \
            -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
BUILD    := $(BUILD)/cuda
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

MODULES  := model optim net gossip node
LIB_SRC  := $(filter-out node/main.c,$(wildcard $(addsuffix /*.c,$(MODULES))))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CU_SRC   := $(if $(filter 1,$(CUDA)),$(wildcard model/*.cu),)
CU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
LIB      := $(BUILD)/libloco.a
BIN      := $(BUILD)/loco

TEST_SRC := $(wildcard tests/*/test_*.c)
TEST_BIN := $(TEST_SRC:%.c=$(BUILD)/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/tests/fuzz/replay_%)
BENCH_SRC:= $(wildcard tests/bench/bench_*.c)
BENCH_BIN:= $(BENCH_SRC:%.c=$(BUILD)/%)

.PHONY: all test test-long check bench clean fuzz
# Keep test objects between runs (they are intermediates of the test binaries).
.SECONDARY:
all: $(BIN)

# Rebuild everything when the flags change (Redis-style).
FLAGS_FILE := $(BUILD)/.flags
FLAGS_NOW  := $(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(LDLIBS) $(NVFLAGS)
$(FLAGS_FILE): FORCE
	@mkdir -p $(BUILD)
	@if [ "$$(cat $@ 2>/dev/null)" != "$(FLAGS_NOW)" ]; then echo "$(FLAGS_NOW)" > $@; fi
FORCE:

$(BUILD)/%.o: %.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC    $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC  $<")
	$(Q)$(NVCC) $(NVFLAGS) -DLOCO_CUDA -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ) $(CU_OBJ)
	@$(if $(Q),echo "  AR    $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BIN): $(BUILD)/node/main.o $(LIB)
	@$(if $(Q),echo "  LD    $@")
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) $(if $(CU_OBJ),-lstdc++) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB)
	@$(if $(Q),echo "  LD    $@")
	$(Q)$(CC) $(LDFLAGS) $^ -lcriterion $(LDLIBS) $(if $(CU_OBJ),-lstdc++) -o $@

$(BUILD)/tests/bench/%: $(BUILD)/tests/bench/%.o $(LIB)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) $(if $(CU_OBJ),-lstdc++) -o $@

# Each fuzz target also builds as a plain replay driver that runs its saved corpus in `make test`.
$(BUILD)/tests/fuzz/replay_%: tests/fuzz/%.c tests/fuzz/replay_main.c $(LIB) $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $< tests/fuzz/replay_main.c $(LIB) $(LDFLAGS) $(LDLIBS) -o $@

# Real fuzzing (clang 14 + libFuzzer + ASan + UBSan): make fuzz TARGET=fuzz_shard [SECONDS=600]
# The library is rebuilt under build/fuzz with coverage instrumentation (fuzzer-no-link), so the
# fuzzer sees the decoders' branches, not just the target's. The run starts from the committed
# corpus tests/fuzz/corpus/TARGET (read-only: libFuzzer writes new inputs into the first corpus
# directory only, build/fuzz/corpus-TARGET); crashing inputs land in build/fuzz/artifacts-TARGET/.
# Copy the ones worth keeping into tests/fuzz/corpus/TARGET so `make test` replays them.
FUZZ_BUILD := build/fuzz
FUZZ_SAN   := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SECONDS    ?= 60
fuzz:
	@test -n "$(TARGET)" -a -f "tests/fuzz/$(TARGET).c" || \
	  { echo "usage: make fuzz TARGET=fuzz_<name> [SECONDS=N]  (targets: $(notdir $(FUZZ_SRC:.c=)))"; exit 2; }
	$(Q)$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang NATIVE=0 \
	  SANITIZE=fuzzer-no-link,address,undefined $(FUZZ_BUILD)/libloco.a
	$(Q)clang $(filter-out -MMD -MP,$(CPPFLAGS)) -std=c11 -g -O1 -fopenmp $(FUZZ_SAN) tests/fuzz/$(TARGET).c \
	  $(FUZZ_BUILD)/libloco.a $(LDFLAGS) $(LDLIBS) -o $(FUZZ_BUILD)/$(TARGET)
	$(Q)mkdir -p $(FUZZ_BUILD)/corpus-$(TARGET) $(FUZZ_BUILD)/artifacts-$(TARGET)
	$(FUZZ_BUILD)/$(TARGET) -max_total_time=$(SECONDS) -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_BUILD)/artifacts-$(TARGET)/ $(FUZZ_BUILD)/corpus-$(TARGET) tests/fuzz/corpus/$(TARGET)

test: $(BIN) $(TEST_BIN) $(FUZZ_BIN)
	$(Q)LOCO_BUILD=$(BUILD) PYTHON=$(PYTHON) tests/run.sh

test-long: $(BIN) $(TEST_BIN)
	$(Q)LOCO_BUILD=$(BUILD) PYTHON=$(PYTHON) LOCO_LONG=1 tests/run.sh

check:
	$(MAKE) test SANITIZE=address,undefined

bench: $(BIN) $(BENCH_BIN)
	$(Q)LOCO_BUILD=$(BUILD) PYTHON=$(PYTHON) tests/bench/run.sh

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# The README's main job: a swarm of four peers on this machine (loco swarm prepares the default
# corpus, Debian's fortunes, into build/data/fortunes when it is missing), then a sample of what
# peer 0 learned. The single-node alternative: build/loco train -c deploy/demo.ini
demo: $(BIN)
	$(BIN) swarm
	@echo "--- a sample from peer 0's model:"
	@$(BIN) sample --checkpoint build/swarm/peer-0/checkpoints --prompt "The " --tokens 300 --seed 1
.PHONY: demo

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the systemd unit (deploy/loco.service,
# its ExecStart pointed at PREFIX/bin/loco; systemd reads PREFIX/lib/systemd/system for
# /usr/local and /usr) and the man page. Builds the binary first if it is out of date.
PREFIX ?= /usr/local
install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/loco
	sed 's|/usr/local/bin/loco|$(PREFIX)/bin/loco|g' deploy/loco.service >$(DESTDIR)$(PREFIX)/lib/systemd/system/loco.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/loco.service
	install -m 0644 docs/loco.1 $(DESTDIR)$(PREFIX)/share/man/man1/loco.1
.PHONY: install
