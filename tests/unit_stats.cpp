// Options and statistics: environment parsing (good and bad values), run-time get/set,
// figures that add up, the report at exit, the sampler, mallinfo2/malloc_stats.
#include <doctest/doctest.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mapalloc.h"
#include "test_support.h"

namespace {

#ifdef MAPALLOC_SECURE
constexpr bool MAPALLOC_SECURE_BUILD = MAPALLOC_SECURE != 0;
#else
constexpr bool MAPALLOC_SECURE_BUILD = false;
#endif

volatile size_t opaque_zero = 0;
size_t runtime(size_t value) { return value + opaque_zero; }

using test_support::Output;
using test_support::run_probe;

}  // namespace

TEST_CASE("options come from MAPALLOC_* variables") {
  Output output = run_probe({"MAPALLOC_PURGE_DELAY_MS=250", "MAPALLOC_UNMAP_DELAY_MS=5000",
                             "MAPALLOC_PURGE_METHOD=free", "MAPALLOC_THP=2"});
  CHECK(output.status == 0);
  CHECK(output.out.find("purge_delay_ms=250\n") != std::string::npos);
  CHECK(output.out.find("unmap_delay_ms=5000\n") != std::string::npos);
  CHECK(output.out.find("purge_method=1\n") != std::string::npos);
  CHECK(output.out.find("transparent_huge_pages=2\n") != std::string::npos);
  CHECK(output.err.empty());
}

TEST_CASE("a bad value warns once, names the variable and the accepted values, keeps the default") {
  Output output = run_probe(
      {"MAPALLOC_PURGE_DELAY_MS=soon", "MAPALLOC_PURGE_METHOD=later", "MAPALLOC_THP=yes"});
  CHECK(output.status == 0);  // never stops the program
  CHECK(output.out.find("purge_delay_ms=100\n") != std::string::npos);
  CHECK(output.out.find("purge_method=0\n") != std::string::npos);
  CHECK(output.err.find("MAPALLOC_PURGE_DELAY_MS=soon (accepted: milliseconds") !=
        std::string::npos);
  CHECK(output.err.find("MAPALLOC_PURGE_METHOD=later (accepted: dontneed, free)") !=
        std::string::npos);
  CHECK(output.err.find("MAPALLOC_THP=yes (accepted: 0, 1, 2)") != std::string::npos);
  CHECK(std::count(output.err.begin(), output.err.end(), '\n') == 3);
}

TEST_CASE("MAPALLOC_VERBOSE=1 prints the options in force") {
  Output output = run_probe({"MAPALLOC_VERBOSE=1", "MAPALLOC_PURGE_DELAY_MS=7"});
  CHECK(output.err.find("mapalloc: options: purge_delay_ms=7 unmap_delay_ms=1000 ") !=
        std::string::npos);
}

TEST_CASE("options can be read and changed at run time") {
  long saved = -1;
  REQUIRE(mapalloc_option_get("purge_delay_ms", &saved) == 0);
  CHECK(mapalloc_option_set("purge_delay_ms", 321) == 0);
  long value = 0;
  CHECK(mapalloc_option_get("purge_delay_ms", &value) == 0);
  CHECK(value == 321);
  CHECK(mapalloc_option_set("purge_delay_ms", saved) == 0);
  CHECK(mapalloc_option_set("no_such_option", 1) == EINVAL);
  CHECK(mapalloc_option_get("no_such_option", &value) == EINVAL);
  CHECK(mapalloc_option_set("purge_method", 2) == EINVAL);  // out of range
  CHECK(mapalloc_option_set("purge_delay_ms", -1) == EINVAL);
}

TEST_CASE("statistics add up: blocks held by the test show in their class and in the total") {
  mapalloc_stats_t before, during, after;
  malloc_trim(0);  // (the secure build: empties this thread's quarantine, whose blocks count)
  REQUIRE(mapalloc_stats_get(&before) == 0);
  std::vector<void*> blocks;
  for (int i = 0; i < 10000; ++i) blocks.push_back(malloc(runtime(3000)));  // class 3072
  void* volatile large = malloc(runtime(8 << 20));  // volatile: not folded with its free
  REQUIRE(mapalloc_stats_get(&during) == 0);
  size_t size_class = 0;
  while (during.classes[size_class].block_bytes < 3000) ++size_class;
  CHECK(during.classes[size_class].block_bytes == 3072);
  size_t held = during.classes[size_class].blocks_in_use - before.classes[size_class].blocks_in_use;
  CHECK(held >= 10000);
  CHECK(held <= 10000 + 64);  // plus at most the blocks cached in this thread's free list
  CHECK(during.large_blocks == before.large_blocks + 1);
  CHECK(during.large_bytes >= before.large_bytes + (8u << 20));
  CHECK(during.in_use_bytes >= before.in_use_bytes + 10000 * 3072 + (8u << 20));
  CHECK(during.mapped_bytes >= during.in_use_bytes);
  CHECK(during.threads >= 1);
  struct mallinfo2 info = mallinfo2();
  CHECK(info.uordblks >= 10000u * 3072u);
  CHECK(info.hblkhd >= (8u << 20));
  for (void* block : blocks) free(block);
  free(large);
  REQUIRE(mapalloc_stats_get(&after) == 0);
  // Some may wait in this thread's free list (and, in the secure build, in its quarantine).
  size_t slack = 64 + (MAPALLOC_SECURE_BUILD ? 256 : 0);
  CHECK(after.classes[size_class].blocks_in_use <=
        before.classes[size_class].blocks_in_use + slack);
  CHECK(after.large_blocks == before.large_blocks);
}

TEST_CASE("the table prints through a writer, and malloc_stats prints it to stderr") {
  std::string text;
  mapalloc_stats_print(
      [](void* context, const char* line) {
        *static_cast<std::string*>(context) += std::string(line) + "\n";
      },
      &text);
  CHECK(text.find("mapalloc statistics") != std::string::npos);
  CHECK(text.find("system calls  mmap ") != std::string::npos);
  CHECK(text.find("block bytes") != std::string::npos);
  auto result = test_support::run_in_child([] { malloc_stats(); });
  CHECK(result.stderr_text.find("mapalloc statistics") != std::string::npos);
}

TEST_CASE("MAPALLOC_STATS=1 prints the table at exit, to MAPALLOC_STATS_FILE if given") {
  Output output = run_probe({"MAPALLOC_STATS=1"});
  CHECK(output.status == 0);
  CHECK(output.err.find("mapalloc statistics") != std::string::npos);
  std::string file = "/tmp/mapalloc-stats." + std::to_string(getpid());
  output = run_probe({"MAPALLOC_STATS=1", "MAPALLOC_STATS_FILE=" + file});
  CHECK(output.err.find("mapalloc statistics") == std::string::npos);
  std::ifstream written(file);
  std::stringstream text;
  text << written.rdbuf();
  CHECK(text.str().find("mapalloc statistics") != std::string::npos);
  unlink(file.c_str());
}

TEST_CASE("MAPALLOC_SAMPLE_MS appends CSV samples to the stats file") {
  std::string file = "/tmp/mapalloc-samples." + std::to_string(getpid());
  Output output = run_probe({"MAPALLOC_SAMPLE_MS=10", "MAPALLOC_STATS_FILE=" + file}, "300");
  CHECK(output.status == 0);
  std::ifstream written(file);
  std::string line;
  REQUIRE(std::getline(written, line));
  CHECK(line == "time_ms,in_use_bytes,mapped_bytes,resident_bytes");
  int samples = 0;
  size_t last_time = 0;
  while (std::getline(written, line)) {
    size_t time_ms = 0, in_use = 0, mapped = 0, resident = 0;
    REQUIRE(sscanf(line.c_str(), "%zu,%zu,%zu,%zu", &time_ms, &in_use, &mapped, &resident) == 4);
    CHECK(time_ms >= last_time);
    CHECK(mapped >= in_use);
    last_time = time_ms;
    ++samples;
  }
  CHECK(samples >= 10);  // ~30 expected in 300 ms; a loaded machine may skip some
  unlink(file.c_str());
  output = run_probe({"MAPALLOC_SAMPLE_MS=10"});  // without a file: a warning, no samples
  CHECK(output.err.find("MAPALLOC_SAMPLE_MS needs MAPALLOC_STATS_FILE") != std::string::npos);
}

TEST_CASE("the table at exit survives a program that closes stderr first (GNU ls does)") {
  std::string out = "/tmp/mapalloc-ls-err." + std::to_string(getpid());
  std::string command = "MAPALLOC_STATS=1 LD_PRELOAD=build/libmapalloc.so ls / >/dev/null 2>" + out;
  CHECK(system(command.c_str()) == 0);
  std::ifstream err(out);
  std::stringstream text;
  text << err.rdbuf();
  CHECK(text.str().find("mapalloc statistics") != std::string::npos);
  unlink(out.c_str());
}

TEST_CASE("%p in MAPALLOC_STATS_FILE gives each process its own file") {
  std::string directory = "/tmp/mapalloc-pid-files." + std::to_string(getpid());
  std::string command = "mkdir -p " + directory +
                        " && MAPALLOC_STATS=1 MAPALLOC_STATS_FILE=" + directory +
                        "/stats.%p LD_PRELOAD=build/libmapalloc.so " +
                        "sh -c 'true; ls / >/dev/null; ls / >/dev/null' && ls " + directory +
                        " | wc -l > " + directory + ".count";
  CHECK(system(command.c_str()) == 0);
  std::ifstream count_file(directory + ".count");
  int files = 0;
  count_file >> files;
  CHECK(files >= 3);  // sh and the two ls, each with its own table
  CHECK(system(("rm -rf " + directory + " " + directory + ".count").c_str()) == 0);
}
