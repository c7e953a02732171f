// The options table (src/platform/options.cpp) drives everything about the options: each row
// is reachable by mapalloc_option_get/set and by its environment variable, the verbose listing
// shows each, and the README's table of options is the same table. Also: every README section
// that the build files and sources name exists.
#include <doctest/doctest.h>
#include <errno.h>
#include <string.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mapalloc.h"
#include "platform/options.h"
#include "test_support.h"

using mapalloc::kOptionTable;
using mapalloc::OptionKind;
using mapalloc::OptionRow;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// A value of `row` other than its default (and other than that of any row of the same kind, so
// that two rows wired to one field show), and the text its variable takes for it.
long other_value(const OptionRow& row) {
  long index = &row - kOptionTable;
  switch (row.kind) {
    case OptionKind::kMilliseconds:
      return 1001 + index;
    case OptionKind::kNumber:
      return row.max - index;  // (fault_mmap: never reached by the probe)
    default:
      return row.default_value == row.max ? 0 : row.max;
  }
}
std::string variable_text(const OptionRow& row, long value) {
  if (row.kind == OptionKind::kWord) return row.words[value];
  return std::to_string(value);
}

std::string formatted(const OptionRow& row, const mapalloc::Options& values) {
  char text[256];
  mapalloc::option_format(row, values, text, sizeof(text));
  return text;
}

}  // namespace

TEST_CASE("every numeric option is read by name, and set by name unless it acts only at start") {
  for (const OptionRow& row : kOptionTable) {
    std::string name = row.name;
    CAPTURE(name);
    long saved = -1;
    if (row.kind == OptionKind::kPath) {  // not a number
      CHECK(mapalloc_option_get(row.name, &saved) == EINVAL);
      CHECK(mapalloc_option_set(row.name, 0) == EINVAL);
      continue;
    }
    REQUIRE(mapalloc_option_get(row.name, &saved) == 0);
    long value = other_value(row);
    if (!row.settable) {
      CHECK(mapalloc_option_set(row.name, value) == EINVAL);
      continue;
    }
    CHECK(mapalloc_option_set(row.name, value) == 0);
    long read = -1;
    CHECK(mapalloc_option_get(row.name, &read) == 0);
    CHECK(read == value);
    CHECK(row.get(mapalloc::options()) == value);  // the field the library reads
    CHECK(mapalloc_option_set(row.name, row.max + 1) == EINVAL);
    CHECK(mapalloc_option_set(row.name, -1) == EINVAL);
    CHECK(mapalloc_option_set(row.name, saved) == 0);
  }
  long value;
  CHECK(mapalloc_option_get("no_such_option", &value) == EINVAL);
  CHECK(mapalloc_option_set("no_such_option", 0) == EINVAL);
}

TEST_CASE("every option is read from its variable and shown by MAPALLOC_VERBOSE=1") {
  std::string stats_file = "/tmp/mapalloc-options-stats." + std::to_string(getpid());
  std::vector<std::string> environment, names;
  mapalloc::Options expected = mapalloc::options();
  for (const OptionRow& row : kOptionTable) {
    names.push_back(row.name);
    if (row.kind == OptionKind::kPath) {
      environment.push_back(std::string(row.variable) + "=" + stats_file);
      strcpy(mapalloc::option_path(row, expected), stats_file.c_str());
      continue;
    }
    // (The probe prints the listing, and must not start the heap profiler: tests/prof does.)
    long value = strcmp(row.name, "verbose") == 0 ? 1
                 : strcmp(row.name, "prof") == 0  ? 0
                                                  : other_value(row);
    environment.push_back(std::string(row.variable) + "=" + variable_text(row, value));
    row.set(expected, value);
  }
  test_support::Output output = test_support::run_probe(environment, "0", names);
  unlink(stats_file.c_str());
  CHECK(output.status == 0);
  std::string listing = "mapalloc: options:";
  for (const OptionRow& row : kOptionTable) {
    std::string variable = row.variable;
    CAPTURE(variable);
    if (row.kind != OptionKind::kPath) {
      std::string line = std::string(row.name) + "=" + std::to_string(row.get(expected)) + "\n";
      CHECK(output.out.find(line) != std::string::npos);
    }
    listing += " " + std::string(row.name) + "=" + formatted(row, expected);
  }
  CHECK(output.err == listing + "\n");
}

TEST_CASE("the README's table of options is the options table") {
  std::string readme = read_text("README.md");
  size_t section = readme.find("\n## Options\n");
  REQUIRE(section != std::string::npos);
  size_t end = readme.find("\n## ", section + 1);
  std::istringstream lines(readme.substr(section, end - section));
  std::vector<std::string> rows;
  std::regex row_pattern(R"(^\| `(MAPALLOC_[A-Z_]+)` \| (.*) \| (.*) \|$)");
  for (std::string line; std::getline(lines, line);) {
    std::smatch match;
    if (!std::regex_match(line, match, row_pattern)) continue;
    std::string value = match[2];
    if (value.size() > 2 && value.front() == '`' && value.back() == '`')
      value = value.substr(1, value.size() - 2);
    rows.push_back(match[1].str() + " | " + value + " | " + match[3].str());
  }
  std::vector<std::string> table;
  mapalloc::Options defaults{};
  for (const OptionRow& row : kOptionTable) {
    if (row.set != nullptr) row.set(defaults, row.default_value);
  }
  for (const OptionRow& row : kOptionTable) {
    table.push_back(std::string(row.variable) + " | " + formatted(row, defaults) + " | " +
                    row.description);
  }
  CHECK(rows == table);
}

TEST_CASE("every README section that the build files, scripts and sources name exists") {
  std::string readme = read_text("README.md");
  std::set<std::string> headings;
  std::regex heading(R"(^#+ (.*)$)");
  std::istringstream lines(readme);
  for (std::string line; std::getline(lines, line);) {
    std::smatch match;
    if (std::regex_match(line, match, heading)) headings.insert(match[1]);
  }
  // (README.md, "Design"), (README: "Recording and replaying allocations"), (README, Memory
  // return, has figures)
  std::regex reference(R"re(README(?:\.md)?[,:] *(?:"([^"]+)"|([A-Z][a-z]+(?: [a-z]+)*),))re");
  std::vector<std::string> files = {"Makefile"};
  for (const char* folder : {"src", "scripts", "include", "tests", "stress"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(folder)) {
      if (entry.is_regular_file() && entry.path().extension() != ".png")
        files.push_back(entry.path().string());
    }
  }
  size_t references = 0;
  for (const std::string& file : files) {
    std::string text = read_text(file);
    for (std::sregex_iterator it(text.begin(), text.end(), reference), last; it != last; ++it) {
      std::string name = (*it)[1].matched ? (*it)[1].str() : (*it)[2].str();
      CAPTURE(file);
      CAPTURE(name);
      CHECK(headings.count(name) == 1);
      ++references;
    }
  }
  CHECK(references >= 3);
}
