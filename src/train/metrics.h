// Training metrics: the running windows the trainer keeps (loss median for the spike guard, expert counts for
// a windowed MaxVio), throughput / MFU arithmetic, the one-line progress format, and the JSONL metrics file.
//
// metrics.jsonl (RUN/metrics.jsonl), one JSON object per line:
//   {"type":"step","step":12,"loss":…,"main_ce":…,"mtp_ce":[…],"balance":…,"lr":…,"grad_norm":…,
//    "tokens":…,"tokens_per_s":…,"mfu":…,"maxvio":[per MoE layer],"maxvio_mean":…,"maxvio_window":…,
//    "lambda":…,"gamma":…,"skipped":false}
//   {"type":"eval","step":12,"val_loss":…,"val_main_ce":…}
//   {"type":"event","step":12,"event":"skip"|"rollback"|"resume"|"checkpoint","detail":"…"}
// step = optimizer steps completed after this one (1-based). Timing fields vary run to run; everything else
// is deterministic. MFU = tokens/s × flops_per_token_train (model/plan.h) ÷ (peak_gflops·1e9).
#pragma once
#include <cstdint>
#include <cstdio>
#include <deque>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/load_balance.h"

namespace dsv3::train {

class RunningMedian {
 public:
  explicit RunningMedian(int64_t window = 64) : window_(window) {}
  void push(double v);
  double median() const;  // NaN when empty
  int64_t size() const { return int64_t(values_.size()); }
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j);

 private:
  int64_t window_;
  std::deque<double> values_;
};

// Expert counts of the last `window` steps per MoE layer; window_maxvio() = mean over layers of the MaxVio of
// the summed counts.
class MaxVioWindow {
 public:
  explicit MaxVioWindow(int64_t window = 20) : window_(window) {}
  void push(const std::vector<ExpertLoad>& loads);
  double window_maxvio() const;
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j);

 private:
  int64_t window_;
  std::deque<std::vector<ExpertLoad>> steps_;
};

// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);
double mfu(double tokens_per_s, double flops_per_token, double peak_gflops);

// Appends JSON lines, flushed after each line. On resume the file is first cut back to the lines of steps
// ≤ keep_through_step, so a resumed run's file has no lines from the abandoned future.
class MetricsLog {
 public:
  MetricsLog() = default;
  MetricsLog(const std::string& path, int64_t keep_through_step);  // keep_through_step < 0: start empty
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& line);

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

// Reads metrics.jsonl (skipping malformed lines); for plots and tests.
std::vector<nlohmann::json> read_metrics(const std::string& path);

}  // namespace dsv3::train
