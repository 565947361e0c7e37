// Helpers for the trainer tests: a tiny run config, temp run directories, running the dsv3 binary as a child
// process, and bitwise comparison of weights.
#pragma once
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <omp.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "model/weights.h"
#include "train/run_config.h"

namespace dsv3::train::testing {

// One OpenMP thread (which oneDNN's GEMMs also use) while alive: the development machine has 2 cores shared
// with other builds, where spinning worker threads make a tiny model 25x slower. Results are the same bits
// either way within one process; the child processes get OMP_NUM_THREADS=1.
class SingleThread {
 public:
  SingleThread() : omp_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThread() { omp_set_num_threads(omp_); }

 private:
  int omp_;
};

inline std::string fresh_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("dsv3_trainer_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

// tiny model, synthetic data, B=4 S=16, a few steps, fast.
inline RunConfig tiny_run(const std::string& out, int64_t steps) {
  RunConfig c = RunConfig::from_json({{"model", "tiny"},
                                      {"batch", 4},
                                      {"seq", 16},
                                      {"steps", steps},
                                      {"lr", {{"kind", "cosine"}, {"peak", 3e-3}, {"min", 3e-4}, {"warmup_steps", 2}}},
                                      {"sample_tokens", 0},
                                      {"out", out}});
  return c;
}

// Runs argv[0..] with extra environment entries; returns the pid (does not wait).
inline pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env_extra,
                   const std::string& log_path) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("OMP_NUM_THREADS", "1", 1);
    ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
    for (const std::string& e : env_extra) ::putenv(const_cast<char*>(strdup(e.c_str())));
    FILE* f = std::fopen(log_path.c_str(), "w");
    if (f) {
      ::dup2(::fileno(f), 1);
      ::dup2(::fileno(f), 2);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Runs to completion; returns the exit status (or −signal).
inline int run_wait(const std::vector<std::string>& args, const std::string& log_path,
                    const std::vector<std::string>& env_extra = {}) {
  pid_t pid = spawn(args, env_extra, log_path);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

inline std::string dsv3_bin() { return std::string(DSV3_BINARY_DIR) + "/dsv3"; }

inline std::string slurp(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "";
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

// Every tensor of a and b has identical bytes.
inline void expect_bitwise_equal(const ModelWeights& a, const ModelWeights& b) {
  ASSERT_EQ(a.by_name.size(), b.by_name.size());
  for (const auto& [n, t] : a.by_name) {
    auto it = b.by_name.find(n);
    ASSERT_NE(it, b.by_name.end()) << n;
    ASSERT_EQ(t.nbytes(), it->second.nbytes()) << n;
    ASSERT_EQ(std::memcmp(t.data, it->second.data, t.nbytes()), 0) << "tensor " << n << " differs";
  }
}

}  // namespace dsv3::train::testing
