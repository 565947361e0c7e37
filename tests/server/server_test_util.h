// Helpers for the server tests: a model directory with the `tiny` config's random weights and a small BPE
// tokenizer trained to exactly its 320-id vocabulary (made once per test process), and a `dsv3 serve` child
// process on a free loopback port.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"

namespace dsv3::test {

namespace fs = std::filesystem;

// Training text for the tokenizer: a little English, code and Chinese, so merges exist for the test prompts.
inline std::vector<std::string> server_tokenizer_corpus() {
  const std::vector<std::string> lines = {
      "Hello there, how are you? I am fine, thank you.",
      "The quick brown fox jumps over the lazy dog. Once upon a time there was a fox.",
      "def add(a, b):\n    c = a + b\n    return c\n",
      "Tell me something about the weather in Paris today.",
      "Request number 12: tell me something interesting.",
      "深度学习模型需要大量的训练数据。",
  };
  std::vector<std::string> docs;
  for (int rep = 0; rep < 20; ++rep)
    for (const std::string& l : lines) docs.push_back(l);
  return docs;
}

// The model directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json), made once.
inline const std::string& server_model_dir() {
  static const std::string dir = [] {
    const fs::path d = fs::temp_directory_path() / ("dsv3_server_model_" + std::to_string(::getpid()));
    fs::remove_all(d);
    ModelConfig c = ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/tiny.json");
    // Init std 0.05 (as the inference tests use): sharper distributions than the paper's 0.006.
    ModelWeights::random(c, /*seed=*/11, /*std=*/0.05f).save(d.string(), DType::F32);
    tok::BpeTrainerOptions o;
    o.vocab_size = int32_t(c.vocab_size);
    o.min_frequency = 1;
    tok::BpeTrainer t(tok::PreTokenizer::deepseek_v3(), o);
    for (const std::string& doc : server_tokenizer_corpus()) t.add_text(doc);
    tok::save_bpe_tokenizer(t.train(), d.string());
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / ("dsv3_server_model_" + std::to_string(::getpid())), ec);
    });
    return d.string();
  }();
  return dir;
}

inline const tok::Tokenizer& server_tokenizer() {
  static const tok::Tokenizer t = tok::Tokenizer::load(server_model_dir());
  return t;
}

inline std::string dsv3_binary() { return std::string(DSV3_BINARY_DIR) + "/dsv3"; }

// A `dsv3 serve` child process. start() returns once it prints its URL (or fails the test).
class ServeProcess {
 public:
  ~ServeProcess() { kill_now(); }

  void start(const std::vector<std::string>& extra) {
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    std::vector<std::string> args = {dsv3_binary(), "serve", "--model", server_model_dir(), "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      setenv("OMP_WAIT_POLICY", "passive", 1);
      setenv("OMP_NUM_THREADS", "1", 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    out_fd_ = out[0];
    // Read stdout until "listening on http://HOST:PORT".
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_fd_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(out_fd_, buf, sizeof buf);
      if (n <= 0) break;
      log_.append(buf, size_t(n));
      const size_t at = log_.find("listening on http://");
      if (at != std::string::npos) {
        const size_t colon = log_.find(':', at + 20);
        const size_t eol = log_.find('\n', at);
        if (colon != std::string::npos && eol != std::string::npos) {
          port_ = std::stoi(log_.substr(colon + 1, eol - colon - 1));
          return;
        }
      }
    }
    FAIL() << "dsv3 serve did not start; its output:\n" << log_;
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& log() const { return log_; }

  // Sends `sig` and waits up to `timeout_s`; returns the exit status (-1: still running, then killed).
  int signal_and_wait(int sig, double timeout_s, double* waited_s = nullptr) {
    if (pid_ <= 0) return -1;
    const auto t0 = std::chrono::steady_clock::now();
    ::kill(pid_, sig);
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < timeout_s) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        if (waited_s) *waited_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill_now();
    return -1;
  }

 private:
  void kill_now() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (out_fd_ >= 0) close(out_fd_), out_fd_ = -1;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int port_ = -1;
  std::string log_;
};

}  // namespace dsv3::test
