# Benchmarks beyond make bench. Included from the Makefile.
#
#   make memory-return   the README's memory-return table ("Memory return"): builds
#                        scripts/bench/memory_return.c and runs it under mapalloc (also with
#                        the frees in another thread), glibc, jemalloc, mimalloc and tcmalloc
#                        (scripts/bench/memory_return.py; EXTRA="NAME=PATH.so ..." adds other
#                        allocators, MEMORY_RETURN_ARGS="--runs 5" passes options to the script)

BUILD ?= build
MEMORY_RETURN_ARGS ?=

$(BUILD)/bench/memory_return: scripts/bench/memory_return.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -pthread -Wall -Wextra -o $@ $<

.PHONY: memory-return
memory-return: $(BUILD)/libmapalloc.so $(BUILD)/bench/memory_return
	@scripts/ensure-packages.sh bench
	@python3 scripts/bench/memory_return.py $(if $(EXTRA),--extra $(EXTRA)) $(MEMORY_RETURN_ARGS)
