# Allocation traces (README: "Recording and replaying allocations"): the tracing library and the
# tools that read traces. Included from the Makefile; uses its BUILD, CXX, CORE_OBJECTS, the
# link_shared_library recipe and its rule for $(BUILD)/obj/%.o (which builds trace.o and
# trace_override.o from src/trace/).
#   make trace-tools    build/libmapalloc-trace.so, build/replay, build/trace-info

TRACE_TOOLS := $(BUILD)/libmapalloc-trace.so $(BUILD)/replay $(BUILD)/trace-info
.PHONY: trace-tools
trace-tools: $(TRACE_TOOLS)

# override.o with every symbol made weak: trace_override.o's traced malloc, free, ... (and glibc's
# internal names for them) take precedence at link time, while the exports it does not
# define (mallopt, mallinfo2, malloc_trim, malloc_stats, the fork hooks, ...) stay exactly as
# in the normal library, without a second copy of their source. override_new.o is not used:
# trace_override.o defines every operator new and delete.
$(BUILD)/trace/override-weak.o: $(BUILD)/obj/override/override.o
	@mkdir -p $(dir $@)
	objcopy --weaken $< $@

$(BUILD)/libmapalloc-trace.so: $(CORE_OBJECTS) $(BUILD)/obj/trace/trace.o $(BUILD)/obj/trace/trace_override.o \
  $(BUILD)/trace/override-weak.o
	$(link_shared_library)

# The readers: ordinary C++17 programs. They allocate with plain malloc and new, so that the
# allocator preloaded into them serves replay's calls.
TRACE_TOOL_CXXFLAGS := -std=c++17 -O2 -g -pthread -Wall -Wextra -Werror -Isrc
TRACE_READER := scripts/replay/trace_reader.h src/trace/trace.h

$(BUILD)/replay: scripts/replay/replay.cpp $(TRACE_READER)
	@mkdir -p $(dir $@)
	$(CXX) $(TRACE_TOOL_CXXFLAGS) -o $@ $<

$(BUILD)/trace-info: scripts/replay/trace_info.cpp $(TRACE_READER)
	@mkdir -p $(dir $@)
	$(CXX) $(TRACE_TOOL_CXXFLAGS) -o $@ $<
