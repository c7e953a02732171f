# Benchmarks beyond make bench. Included from the Makefile.
#
#   make memory-return   the README's memory-return table ("Memory return"): builds
#                        scripts/bench/memory_return.c and runs it under mapalloc (also with
#                        the frees in another thread), glibc, jemalloc, mimalloc and tcmalloc
#                        (scripts/bench/memory_return.py; EXTRA="NAME=PATH.so ..." adds other
#                        allocators, MEMORY_RETURN_ARGS="--runs 5" passes options to the script)
#   make prof-cost       the heap profiler's cost when on, beside jemalloc's (below)
#   make prof-pairs      the heap profiler's cost in time, on and off run at once in pairs
#                        (scripts/bench/prof_pairs.py; PROF_PAIRS_ARGS="--pairs 15 --full";
#                        "--instructions": instruction counts with cachegrind instead)
#   make bench-pairs     mapalloc against glibc, jemalloc, mimalloc and tcmalloc, each pair of
#                        runs at once on the two cores (scripts/bench/pairs.py; EXTRA="NAME=PATH.so
#                        ..." adds allocators, BENCH_PAIRS_ARGS="--pairs 15 --only jq lua")

BUILD ?= build
MEMORY_RETURN_ARGS ?=

$(BUILD)/bench/memory_return: scripts/bench/memory_return.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -pthread -Wall -Wextra -o $@ $<

.PHONY: memory-return
memory-return: $(BUILD)/libmapalloc.so $(BUILD)/bench/memory_return
	@scripts/ensure-packages.sh bench
	@python3 scripts/bench/memory_return.py $(if $(EXTRA),--extra $(EXTRA)) $(MEMORY_RETURN_ARGS)

# make prof-cost: what the heap profiler costs when on (README "Heap profiling"): make bench's
# workloads (--quick) under mapalloc and jemalloc, each also with its profiler on at its default
# interval (MAPALLOC_PROF=1; jemalloc's MALLOC_CONF=prof:true), alternating. PROF_COST_ARGS
# passes options to scripts/bench.py (e.g. "--runs 5" or "--only lifo churn").
PROF_COST_ARGS ?=
JEMALLOC_LIBRARY ?= /usr/lib/$(shell gcc -print-multiarch)/libjemalloc.so.2

.PHONY: prof-cost
prof-cost: $(BUILD)/libmapalloc.so
	@scripts/ensure-packages.sh bench
	@python3 scripts/bench.py --quick --no-callgrind --allocators mapalloc jemalloc \
	  --extra mapalloc+prof=$(BUILD)/libmapalloc.so jemalloc+prof=$(JEMALLOC_LIBRARY) \
	  --env mapalloc+prof:MAPALLOC_PROF=1 \
	        mapalloc+prof:MAPALLOC_PROF_FILE=$(abspath $(BUILD))/bench/prof-cost.%p \
	        jemalloc+prof:MALLOC_CONF=prof:true $(PROF_COST_ARGS)

# make prof-pairs: the profiler's on/off time ratio per workload, each pair of runs started
# together on the two cores, so that the machine's noise falls on both (scripts/bench/prof_pairs.py).
PROF_PAIRS_ARGS ?=

.PHONY: prof-pairs
prof-pairs: $(BUILD)/libmapalloc.so
	@scripts/ensure-packages.sh bench
	@python3 scripts/bench/prof_pairs.py --library $(abspath $(BUILD))/libmapalloc.so $(PROF_PAIRS_ARGS)

# make bench-pairs: mapalloc's time over each other allocator's, per workload, from runs started
# together in pairs (scripts/bench/pairs.py): the few per cent between the fastest allocators
# on the real programs, which make bench's successive runs leave within their noise.
BENCH_PAIRS_ARGS ?=

.PHONY: bench-pairs
bench-pairs: $(BUILD)/libmapalloc.so
	@scripts/ensure-packages.sh bench
	@python3 scripts/bench/pairs.py --library $(abspath $(BUILD))/libmapalloc.so \
	  $(if $(EXTRA),--extra $(EXTRA)) $(BENCH_PAIRS_ARGS)
