// Section timers of train/profile.h.
#include "train/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

namespace dsv3::train {

namespace {

std::map<std::string, double>& totals() {
  static std::map<std::string, double> t;
  return t;
}

}  // namespace

bool profiling_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("DSV3_TRAIN_PROFILE");
    return v != nullptr && std::strcmp(v, "0") != 0 && v[0] != '\0';
  }();
  return on;
}

void profile_add(const char* name, double seconds) { totals()[name] += seconds; }

void profile_reset() { totals().clear(); }

std::string profile_report(int64_t steps, double step_seconds) {
  std::vector<std::pair<double, std::string>> rows;
  for (const auto& [name, t] : totals()) rows.emplace_back(t, name);
  std::sort(rows.rbegin(), rows.rend());
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "profile over %lld steps (%.1f ms/step):\n", (long long)steps,
                1e3 * step_seconds / double(std::max<int64_t>(steps, 1)));
  out += line;
  for (const auto& [t, name] : rows) {
    std::snprintf(line, sizeof line, "  %-28s %9.1f ms/step  %5.1f%%\n", name.c_str(),
                  1e3 * t / double(std::max<int64_t>(steps, 1)), 100.0 * t / std::max(step_seconds, 1e-12));
    out += line;
  }
  return out;
}

}  // namespace dsv3::train
