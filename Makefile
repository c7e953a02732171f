# mapalloc — build, test, benchmark.
#   make              build/libmapalloc.so and build/libmapalloc.a
#   make test         install missing test dependencies, build, run every test suite
#   make bench        the side-by-side comparison with glibc, jemalloc and mimalloc
#                     (EXTRA="NAME=PATH.so ...": other allocators too)
# See README.md for the rest.

CXX      ?= g++
CC       ?= gcc
BUILD    := build
PREFIX   ?= /usr/local

# The library: C++20 without the C++ runtime (no exceptions, no RTTI, no thread-safe statics).
# Functions start on a cache line: otherwise an unrelated change that shifts the fast path's
# placement moved the LIFO benchmark by 6-7 % at the same instruction count.
LIB_CXXFLAGS := -std=c++20 -O2 -g -fPIC -fvisibility=hidden -fvisibility-inlines-hidden \
  -falign-functions=64 \
  -fno-exceptions -fno-rtti -fno-threadsafe-statics -fasynchronous-unwind-tables \
  -fno-builtin-malloc -fno-builtin-free -fno-builtin-calloc -fno-builtin-realloc \
  -ftls-model=initial-exec -Wall -Wextra -Werror -Isrc -Iinclude $(EXTRA_CXXFLAGS)

# The layers, lowest first (README.md, "Design"; scripts/check_layers.py keeps them): each
# folder of src/ includes only itself and the folders before it here.
PLATFORM_SOURCES := platform/diag platform/options platform/os platform/process platform/prof_os \
  platform/unwind_rules platform/unwind
PROF_SOURCES := prof/prof prof/prof_write
CORE_LAYER_SOURCES := core/segment core/arena core/arena_purge core/arena_quarantine core/page \
  core/large core/heap core/heap_remote core/heap_pool core/heap_purge core/heap_validate \
  core/purge core/stats
API_SOURCES := api/init api/alloc api/secure api/debug api/entry api/glibc_rules api/api api/cxx_runtime
CORE_SOURCES := $(PLATFORM_SOURCES) $(PROF_SOURCES) $(CORE_LAYER_SOURCES) $(API_SOURCES) api/prof_hooks
OVERRIDE_SOURCES := override/override override/override_new
CORE_OBJECTS := $(CORE_SOURCES:%=$(BUILD)/obj/%.o)
OVERRIDE_OBJECTS := $(OVERRIDE_SOURCES:%=$(BUILD)/obj/%.o)
HEADERS := $(wildcard src/*/*.h) include/mapalloc.h

.PHONY: all test bench bench-quick stress format clean install uninstall check-format \
  check-sanitize
all: $(BUILD)/libmapalloc.so $(BUILD)/libmapalloc.a $(BUILD)/libmapalloc-prefixed.a \
  $(BUILD)/libmapalloc-secure.so $(BUILD)/libmapalloc-secure.a trace-tools

# The library is built in several variants, each from all of src/ with its own flags into
# $(BUILD)/DIR/. $(call library_objects,DIR,COMPILE,NOTE): the rule for DIR's objects.
define library_objects
$(BUILD)/$(1)/%.o: src/%.cpp $(HEADERS) Makefile
	@mkdir -p $$(dir $$@)
	@echo "  CXX   $$<$(3)"
	@$(2) -c $$< -o $$@
endef
# Recipes: a shared library linked with the C driver (the library needs libc alone at run
# time; also used by scripts/make/trace.mk), and an archive.
link_shared_library = $(CC) -shared -static-libgcc -o $@ $^ -Wl,-z,defs -Wl,-soname,$(notdir $@) -lpthread
make_archive = @rm -f $@ && ar rcs $@ $^

$(eval $(call library_objects,obj,$(CXX) $(LIB_CXXFLAGS)))

$(BUILD)/libmapalloc.so: $(CORE_OBJECTS) $(OVERRIDE_OBJECTS)
	$(link_shared_library)

$(BUILD)/libmapalloc.a: $(CORE_OBJECTS) $(OVERRIDE_OBJECTS)
	$(make_archive)

# Only the mapalloc_* functions, no interposed names: for sanitizer builds and embedding.
$(BUILD)/libmapalloc-prefixed.a: $(CORE_OBJECTS)
	$(make_archive)

# The secure build: the same sources with MAPALLOC_SECURE=1 (see src/api/secure.cpp).
SECURE_OBJECTS := $(CORE_SOURCES:%=$(BUILD)/secure/%.o) $(OVERRIDE_SOURCES:%=$(BUILD)/secure/%.o)
$(eval $(call library_objects,secure,$(CXX) $(LIB_CXXFLAGS) -DMAPALLOC_SECURE=1, (secure)))

$(BUILD)/libmapalloc-secure.so: $(SECURE_OBJECTS)
	$(link_shared_library)

$(BUILD)/libmapalloc-secure.a: $(SECURE_OBJECTS)
	$(make_archive)

# Without the double-free key: only for the benchmark's report of what the checks cost.
UNCHECKED_OBJECTS := $(CORE_SOURCES:%=$(BUILD)/unchecked/%.o) $(OVERRIDE_SOURCES:%=$(BUILD)/unchecked/%.o)
$(eval $(call library_objects,unchecked,$(CXX) $(LIB_CXXFLAGS) -DMAPALLOC_UNCHECKED=1, (unchecked)))

$(BUILD)/libmapalloc-unchecked.so: $(UNCHECKED_OBJECTS)
	$(link_shared_library)

# Sanitizer builds of the library. ThreadSanitizer: clang, the prefix-only archive (the
# sanitizer keeps its own malloc; the stress programs call mapalloc_*), instrumented so that
# races inside the allocator are seen. UndefinedBehaviorSanitizer: the full archive, linked
# into the unit tests.
TSAN_OBJECTS := $(CORE_SOURCES:%=$(BUILD)/tsan/%.o)
$(eval $(call library_objects,tsan,clang++ $(filter-out -O2,$(LIB_CXXFLAGS)) -O1 -fsanitize=thread, (tsan)))

$(BUILD)/tsan/libmapalloc-prefixed.a: $(TSAN_OBJECTS)
	$(make_archive)

UBSAN_OBJECTS := $(CORE_SOURCES:%=$(BUILD)/ubsan/%.o) $(OVERRIDE_SOURCES:%=$(BUILD)/ubsan/%.o)
$(eval $(call library_objects,ubsan,$(CXX) $(LIB_CXXFLAGS) -fsanitize=undefined -fno-sanitize-recover=all, (ubsan)))

$(BUILD)/ubsan/libmapalloc.a: $(UBSAN_OBJECTS)
	$(make_archive)

# ---- tests ------------------------------------------------------------------------------------
TEST_CXXFLAGS := -std=c++20 -O1 -g -pthread -Wall -Wextra -Werror -Isrc -Iinclude
UNIT_SOURCES := $(wildcard tests/unit_*.cpp)
UNIT_OBJECTS := $(UNIT_SOURCES:tests/%.cpp=$(BUILD)/tests/%.o)

$(BUILD)/tests/%.o: tests/%.cpp tests/test_support.h $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	@echo "  CXX   $<"
	@$(CXX) $(TEST_CXXFLAGS) -c $< -o $@

# The unit tests run on mapalloc itself: the whole archive is linked in, so doctest's own
# allocations and the tests' go through it too.
$(BUILD)/tests/misuse: tests/programs/misuse.c Makefile
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -pthread -fno-builtin -Wall -Wextra -o $@ $<

$(BUILD)/tests/options_probe: tests/programs/options_probe.c include/mapalloc.h Makefile
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -Wall -Wextra -o $@ $< -ldl

$(BUILD)/tests/address_space: tests/programs/address_space.c Makefile
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -Wall -Wextra -o $@ $<

$(BUILD)/tests/unit: $(UNIT_OBJECTS) $(BUILD)/libmapalloc.a $(BUILD)/tests/misuse $(BUILD)/tests/options_probe \
  $(BUILD)/tests/address_space
	$(CXX) -pthread -o $@ $(UNIT_OBJECTS) -Wl,--whole-archive $(BUILD)/libmapalloc.a \
	  -Wl,--no-whole-archive

# The same tests against the secure build (objects compiled with MAPALLOC_SECURE=1 so that the
# internal headers they use match the library).
SECURE_UNIT_OBJECTS := $(UNIT_SOURCES:tests/%.cpp=$(BUILD)/tests/secure/%.o)
$(BUILD)/tests/secure/%.o: tests/%.cpp tests/test_support.h $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	@echo "  CXX   $< (secure)"
	@$(CXX) $(TEST_CXXFLAGS) -DMAPALLOC_SECURE=1 -c $< -o $@

$(BUILD)/tests/unit-secure: $(SECURE_UNIT_OBJECTS) $(BUILD)/libmapalloc-secure.a $(BUILD)/tests/misuse
	$(CXX) -pthread -o $@ $(SECURE_UNIT_OBJECTS) -Wl,--whole-archive $(BUILD)/libmapalloc-secure.a \
	  -Wl,--no-whole-archive

$(BUILD)/tests/unit-ubsan: $(UNIT_OBJECTS) $(BUILD)/ubsan/libmapalloc.a $(BUILD)/tests/misuse
	$(CXX) -pthread -fsanitize=undefined -o $@ $(UNIT_OBJECTS) -Wl,--whole-archive \
	  $(BUILD)/ubsan/libmapalloc.a -Wl,--no-whole-archive

SANITIZER_BUILDS := $(BUILD)/tsan/libmapalloc-prefixed.a $(BUILD)/tests/unit-ubsan

# The sanitizer runs on their own (make test runs them too).
check-sanitize: all $(SANITIZER_BUILDS)
	@tests/run_sanitizers.sh

# (The builds run on every core even without -j: make test must stay within 10 minutes on 2.)
test:
	@scripts/ensure-packages.sh test
	@$(MAKE) --no-print-directory -j$(shell nproc) all $(BUILD)/tests/unit $(BUILD)/tests/unit-secure \
	  $(SANITIZER_BUILDS) $(DEBUG_TEST_BUILDS)
	@tests/run_all.sh

# ---- benchmarks, stress ------------------------------------------------------------------------
# EXTRA="NAME=PATH.so ...": other allocators to compare with, each a shared library to preload
# (make bench EXTRA="mimalloc3=/opt/mimalloc/libmimalloc.so.3"; see scripts/bench.py --help).
BENCH_EXTRA = $(if $(EXTRA),--extra $(EXTRA))

bench: all $(BUILD)/libmapalloc-unchecked.so
	@scripts/bench.sh $(BENCH_EXTRA)

bench-quick: all $(BUILD)/libmapalloc-unchecked.so
	@scripts/bench.sh --quick $(BENCH_EXTRA)

# The whole stress suite at full scale under every allocator, statically linked and under
# ThreadSanitizer, then the real programs (up to ~20 minutes).
stress: all $(BUILD)/tsan/libmapalloc-prefixed.a
	@scripts/ensure-packages.sh stress
	stress/run.sh --static --tsan
	stress/real_programs.sh

# ---- housekeeping ------------------------------------------------------------------------------
FORMAT_FILES := $(wildcard src/*/*.cpp src/*/*.h include/*.h tests/*.cpp tests/*.h stress/*.cpp stress/*.c \
  scripts/replay/*.cpp scripts/replay/*.h)
format:
	clang-format -i $(FORMAT_FILES)

check-format:
	clang-format --dry-run -Werror $(FORMAT_FILES)

# make install / make uninstall (PREFIX, DESTDIR): the libraries, header, pkg-config file and
# the mapalloc command.
include scripts/make/install.mk

# make trace-tools (the tracing library, replay, trace-info) and make fuzz / fuzz-quick.
include scripts/make/trace.mk
include scripts/make/fuzz.mk
include scripts/make/security.mk

# make memory-return (the README's memory-return table).
include scripts/make/bench_extra.mk
include scripts/make/debug.mk

clean:
	rm -rf $(BUILD)
