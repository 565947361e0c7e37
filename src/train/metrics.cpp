// Metric windows, formatting and the JSONL log (see metrics.h).
#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include "dsv3/error.h"
#include "io/atomic_file.h"

namespace dsv3::train {

void RunningMedian::push(double v) {
  values_.push_back(v);
  while (int64_t(values_.size()) > window_) values_.pop_front();
}

double RunningMedian::median() const {
  if (values_.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> s(values_.begin(), values_.end());
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

nlohmann::json RunningMedian::to_json() const { return nlohmann::json(std::vector<double>(values_.begin(), values_.end())); }

void RunningMedian::from_json(const nlohmann::json& j) {
  values_.clear();
  for (const auto& v : j) push(v.get<double>());
}

void MaxVioWindow::push(const std::vector<ExpertLoad>& loads) {
  steps_.push_back(loads);
  while (int64_t(steps_.size()) > window_) steps_.pop_front();
}

double MaxVioWindow::window_maxvio() const {
  if (steps_.empty() || steps_.back().empty()) return 0.0;
  double sum = 0.0;
  const size_t n_layers = steps_.back().size();
  for (size_t l = 0; l < n_layers; ++l) {
    std::vector<int64_t> total(steps_.back()[l].count.size(), 0);
    for (const auto& s : steps_)
      if (l < s.size() && s[l].count.size() == total.size())
        for (size_t e = 0; e < total.size(); ++e) total[e] += s[l].count[e];
    sum += max_violation(total);
  }
  return sum / double(n_layers);
}

nlohmann::json MaxVioWindow::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& s : steps_) {
    nlohmann::json step = nlohmann::json::array();
    for (const ExpertLoad& l : s) step.push_back({{"layer", l.layer}, {"count", l.count}});
    j.push_back(step);
  }
  return j;
}

void MaxVioWindow::from_json(const nlohmann::json& j) {
  steps_.clear();
  for (const auto& step : j) {
    std::vector<ExpertLoad> loads;
    for (const auto& l : step) loads.push_back({l["layer"].get<int64_t>(), l["count"].get<std::vector<int64_t>>()});
    push(loads);
  }
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%llds", (long long)t);
  return buf;
}

double mfu(double tokens_per_s, double flops_per_token, double peak_gflops) {
  return tokens_per_s * flops_per_token / (peak_gflops * 1e9);
}

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through_step) : path_(path) {
  std::string kept;
  if (keep_through_step >= 0) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      try {
        nlohmann::json j = nlohmann::json::parse(line);
        if (j.value("step", int64_t(0)) <= keep_through_step) kept += line + "\n";
      } catch (const std::exception&) {
        // a torn last line from a killed run: dropped
      }
    }
  }
  io::atomic_write_file(path, kept);
  f_ = std::fopen(path.c_str(), "ab");
  DSV3_CHECK(f_ != nullptr, "cannot open metrics file '", path, "' for appending");
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const nlohmann::json& line) {
  if (!f_) return;
  const std::string s = line.dump() + "\n";
  io::fwrite_checked(f_, s.data(), s.size(), path_);
  std::fflush(f_);
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::ifstream in(path);
  DSV3_CHECK(in.good(), "cannot read metrics file '", path, "'");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const std::exception&) {
    }
  }
  return out;
}

}  // namespace dsv3::train
