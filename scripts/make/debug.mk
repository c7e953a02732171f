# The debug build (README.md, "Debug build"): the same sources with MAPALLOC_DEBUG=1, as
# build/libmapalloc-debug.so and build/libmapalloc-debug.a, part of `make all`. Assertions,
# the heap validation walk, the fill pattern and Valgrind's client requests (the headers of
# Debian's valgrind package; nothing at run time).
DEBUG_OBJECTS := $(CORE_SOURCES:%=$(BUILD)/debug/%.o) $(OVERRIDE_SOURCES:%=$(BUILD)/debug/%.o)
$(eval $(call library_objects,debug,$(CXX) $(LIB_CXXFLAGS) -DMAPALLOC_DEBUG=1, (debug)))

all: $(BUILD)/libmapalloc-debug.so $(BUILD)/libmapalloc-debug.a

$(BUILD)/libmapalloc-debug.so: $(DEBUG_OBJECTS)
	$(link_shared_library)

$(BUILD)/libmapalloc-debug.a: $(DEBUG_OBJECTS)
	$(make_archive)

# The unit tests against the debug build (objects compiled with MAPALLOC_DEBUG=1 so that the
# internal headers they use match the library); make test builds and runs them.
DEBUG_UNIT_OBJECTS := $(UNIT_SOURCES:tests/%.cpp=$(BUILD)/tests/debug/%.o)
$(BUILD)/tests/debug/%.o: tests/%.cpp tests/test_support.h $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	@echo "  CXX   $< (debug)"
	@$(CXX) $(TEST_CXXFLAGS) -DMAPALLOC_DEBUG=1 -c $< -o $@

$(BUILD)/tests/unit-debug: $(DEBUG_UNIT_OBJECTS) $(BUILD)/libmapalloc-debug.a $(BUILD)/tests/misuse \
  $(BUILD)/tests/options_probe $(BUILD)/tests/address_space
	$(CXX) -pthread -o $@ $(DEBUG_UNIT_OBJECTS) -Wl,--whole-archive $(BUILD)/libmapalloc-debug.a \
	  -Wl,--no-whole-archive

DEBUG_TEST_BUILDS := $(BUILD)/tests/unit-debug
