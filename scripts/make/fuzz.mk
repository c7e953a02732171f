# The allocator's libFuzzer target (tests/fuzz_allocator.cpp). Included from the Makefile; also
# usable alone: make -f scripts/make/fuzz.mk fuzz-quick.
#
#   make fuzz                 fuzz for FUZZ_TIME seconds (600), corpus kept in build/fuzz/corpus
#   make fuzz-quick           about FUZZ_QUICK_TIME seconds (20); its last line is
#                             "ok fuzz (N runs)" or "FAIL fuzz ..." (for tests/run_all.sh)
#   make fuzz-repro INPUT=f   runs one input again and prints its calls, decoded
#
# The harness is built with clang++ -fsanitize=fuzzer,address,undefined and calls mapalloc by
# its mapalloc_* names, so the sanitizer's malloc stays in place for the harness itself. The
# library's core sources (the prefixed library's: no interposed malloc) are compiled again with
# the library's flags plus -fsanitize=fuzzer-no-link (coverage inside the allocator guides the
# fuzzer) and FUZZ_LIB_SANITIZE (address,undefined: the allocator's own stack, globals and
# undefined behaviour are checked too; memory it maps itself is not the sanitizer's business).
# Crashes are saved in build/fuzz/artifacts/.

BUILD ?= build
FUZZ_CXX ?= clang++
FUZZ_TIME ?= 600
FUZZ_QUICK_TIME ?= 20
FUZZ_FLAGS ?= -timeout=30 -rss_limit_mb=4096
FUZZ_LIB_SANITIZE ?= address,undefined

FUZZ_DIR := $(BUILD)/fuzz
FUZZ_BIN := $(FUZZ_DIR)/fuzz_allocator
FUZZ_CORPUS := $(FUZZ_DIR)/corpus
FUZZ_SEEDS := $(FUZZ_DIR)/seeds
FUZZ_ARTIFACTS := $(FUZZ_DIR)/artifacts

# The Makefile's library sources and flags (this file is included from it; a list kept here as
# well went stale): the core only (not override*.cpp nor trace.cpp, which define malloc itself).
$(if $(CORE_SOURCES),,$(error scripts/make/fuzz.mk is included from the Makefile: run make fuzz))
FUZZ_CORE_SOURCES := $(CORE_SOURCES)
FUZZ_LIB_SOURCES := $(FUZZ_CORE_SOURCES:%=src/%.cpp)
FUZZ_BASE_CXXFLAGS := $(LIB_CXXFLAGS)
# -Wno-error: clang warns where gcc, the library's compiler, does not.
FUZZ_LIB_CXXFLAGS := $(FUZZ_BASE_CXXFLAGS) -Wno-error -fsanitize=fuzzer-no-link \
  $(if $(FUZZ_LIB_SANITIZE),-fsanitize=$(FUZZ_LIB_SANITIZE) -fno-sanitize-recover=all)
FUZZ_CXXFLAGS := -std=c++20 -O1 -g -pthread -Wall -Wextra -Isrc -Iinclude \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_LIB_OBJECTS := $(FUZZ_LIB_SOURCES:src/%.cpp=$(FUZZ_DIR)/obj/%.o)
FUZZ_HEADERS := $(wildcard src/*/*.h) include/mapalloc.h

FUZZ_ENV := ASAN_OPTIONS=detect_leaks=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# FUZZ_PROFILE=1: with the heap profiler on, sampling about every 256 bytes.
FUZZ_ENV += $(if $(FUZZ_PROFILE),MAPALLOC_PROF=1 MAPALLOC_PROF_SAMPLE=256 \
  MAPALLOC_PROF_FILE=$(FUZZ_DIR)/profile.%p)

$(FUZZ_DIR)/obj/%.o: src/%.cpp $(FUZZ_HEADERS) scripts/make/fuzz.mk
	@mkdir -p $(dir $@)
	@echo "  CXX   $< (fuzz)"
	@$(FUZZ_CXX) $(FUZZ_LIB_CXXFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_allocator.o: tests/fuzz_allocator.cpp $(FUZZ_HEADERS) scripts/make/fuzz.mk
	@mkdir -p $(dir $@)
	@echo "  CXX   $< (fuzz)"
	@$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -c $< -o $@

$(FUZZ_BIN): $(FUZZ_DIR)/fuzz_allocator.o $(FUZZ_LIB_OBJECTS)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -o $@ $^

# The hand-written seed inputs, written by the harness itself (they follow its decoder).
$(FUZZ_SEEDS)/.done: $(FUZZ_BIN)
	@rm -rf $(FUZZ_SEEDS) && mkdir -p $(FUZZ_SEEDS)
	@FUZZ_ALLOCATOR_WRITE_SEEDS=$(FUZZ_SEEDS) $(FUZZ_BIN) && touch $@

# Runs the fuzzer for $(1) seconds into log $(2); the last line says ok or FAIL.
define fuzz_run
	@mkdir -p $(FUZZ_CORPUS) $(FUZZ_ARTIFACTS)
	@echo "fuzzing for $(1) s (log: $(2))"
	@start=$$(date +%s); \
	$(FUZZ_ENV) $(FUZZ_BIN) -max_total_time=$(1) -print_final_stats=1 $(FUZZ_FLAGS) \
	  -artifact_prefix=$(FUZZ_ARTIFACTS)/ $(FUZZ_CORPUS) $(FUZZ_SEEDS) > $(2) 2>&1; \
	status=$$?; \
	runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(2) | tail -1); \
	cov=$$(grep -E '^#[0-9]+' $(2) | tail -1 | sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+).*/cov \1, ft \2/p'); \
	crash=$$(sed -n 's/.*Test unit written to \(.*\)$$/\1/p' $(2) | tail -1); \
	grep -E '^(==[0-9]+==ERROR|fuzz_allocator:|SUMMARY)|runtime error' $(2) | head -5; \
	if [ $$status -eq 0 ]; then \
	  echo "ok fuzz ($${runs:-?} runs, $$(( $$(date +%s) - start )) s, $$cov, corpus $$(ls $(FUZZ_CORPUS) | wc -l) inputs)"; \
	else \
	  echo "FAIL fuzz (exit $$status after $${runs:-?} runs; input: $${crash:-none saved}; log: $(2))"; \
	  exit 1; \
	fi
endef

.PHONY: fuzz fuzz-quick fuzz-repro fuzz-build
fuzz-build: $(FUZZ_BIN) $(FUZZ_SEEDS)/.done

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_TIME),$(FUZZ_DIR)/fuzz.log)

# Builds first (a build failure is reported as FAIL too), then a short run.
fuzz-quick:
	@mkdir -p $(FUZZ_DIR)
	@if ! $(MAKE) --no-print-directory -j$(shell nproc) -f $(firstword $(MAKEFILE_LIST)) fuzz-build \
	    > $(FUZZ_DIR)/build.log 2>&1; then \
	  tail -n 15 $(FUZZ_DIR)/build.log; \
	  echo "FAIL fuzz (build failed: $(FUZZ_DIR)/build.log)"; exit 1; \
	fi
	$(call fuzz_run,$(FUZZ_QUICK_TIME),$(FUZZ_DIR)/quick.log)

fuzz-repro: $(FUZZ_BIN)
	@test -n "$(INPUT)" || { echo "usage: make fuzz-repro INPUT=file"; exit 2; }
	$(FUZZ_ENV) FUZZ_ALLOCATOR_TRACE=1 $(FUZZ_BIN) $(INPUT)
