// Helpers shared by the unit tests: running code in a child process (for aborts and fork),
// running build/tests/options_probe, and reading the process's resident and virtual memory.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace test_support {

struct ChildResult {
  bool exited = false;  // normal exit (then exit_code), else killed by `signal`
  int exit_code = -1;
  int signal = 0;
  std::string stderr_text;
};

// Runs `body` in a forked child with stderr captured. The child exits 0 when body returns.
inline ChildResult run_in_child(const std::function<void()>& body) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    dup2(pipe_fds[1], STDERR_FILENO);
    signal(SIGABRT, SIG_DFL);
    body();
    _exit(0);
  }
  close(pipe_fds[1]);
  ChildResult result;
  char buffer[512];
  ssize_t got;
  while ((got = read(pipe_fds[0], buffer, sizeof(buffer))) > 0)
    result.stderr_text.append(buffer, got);
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exited = WIFEXITED(status);
  if (result.exited) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

struct Output {
  int status = -1;
  std::string out;
  std::string err;
};

// Runs build/tests/options_probe with libmapalloc preloaded and extra environment variables:
// it allocates for `milliseconds`, printing "name=value" for each option of `names` (default:
// the probe's own list).
inline Output run_probe(const std::vector<std::string>& environment, const char* milliseconds = "0",
                        const std::vector<std::string>& names = {}) {
  std::string out_path = "/tmp/mapalloc-probe-out." + std::to_string(getpid());
  std::string err_path = "/tmp/mapalloc-probe-err." + std::to_string(getpid());
  std::string command = "env";
  for (const std::string& variable : environment) command += " '" + variable + "'";
  command +=
      " LD_PRELOAD=build/libmapalloc.so build/tests/options_probe " + std::string(milliseconds);
  for (const std::string& name : names) command += " " + name;
  command += " >" + out_path + " 2>" + err_path;
  Output output;
  output.status = system(command.c_str());
  std::ifstream out(out_path), err(err_path);
  std::stringstream out_text, err_text;
  out_text << out.rdbuf();
  err_text << err.rdbuf();
  output.out = out_text.str();
  output.err = err_text.str();
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  return output;
}

inline size_t statm_field(int index) {
  FILE* file = fopen("/proc/self/statm", "r");
  if (file == nullptr) return 0;
  unsigned long fields[2] = {0, 0};
  int read_count = fscanf(file, "%lu %lu", &fields[0], &fields[1]);
  fclose(file);
  if (read_count != 2) return 0;
  return fields[index] * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

inline size_t resident_bytes() { return statm_field(1); }
inline size_t virtual_bytes() { return statm_field(0); }

// Touches every page of a block so that it is resident.
inline void touch(void* block, size_t bytes) {
  volatile char* bytes_ptr = static_cast<volatile char*>(block);
  for (size_t i = 0; i < bytes; i += 4096) bytes_ptr[i] = 1;
  if (bytes > 0) bytes_ptr[bytes - 1] = 1;
}

}  // namespace test_support
