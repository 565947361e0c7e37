// Server metrics in the Prometheus text exposition format (version 0.0.4): request counts by endpoint and status,
// token counters, generation rate, queue depth, running requests and KV-cache use. Thread-safe.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "infer/engine.h"

namespace dsv3::server {

// Gauges read at scrape time (from the engine and the server's request table).
struct MetricsSnapshot {
  infer::EngineStats engine;
  int64_t active_choices = 0;       // submitted to the engine and not finished
  int64_t active_requests = 0;      // HTTP generation requests in progress
  int64_t kv_tokens_in_use = 0;     // block-rounded tokens of the running choices (shared prefixes counted per use)
  int64_t kv_token_capacity = 0;
  int64_t slots = 0;
};

class Metrics {
 public:
  void count_request(const std::string& endpoint, int status);
  void add_prompt_tokens(int64_t n);
  void add_completion_tokens(int64_t n);  // as reported in `usage`
  void count_cancelled(int64_t n);        // choices cancelled because the client went away
  void count_rejected();                  // generation requests turned away by the queue bound
  int64_t cancelled() const;
  std::string render(const MetricsSnapshot& s);

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0, cancelled_ = 0, rejected_ = 0;
  // (time, engine generated_tokens) samples of recent scrapes: the rate is taken over the last ~10 s.
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> samples_;
};

}  // namespace dsv3::server
