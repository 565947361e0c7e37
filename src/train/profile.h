// Wall-clock timers per training section, for finding where a step's time goes. Off unless the environment sets
// DSV3_TRAIN_PROFILE=1; then every ProfileScope adds its duration to a named total, and the trainer prints the
// totals (ms per step, share of the step) at the end of a run. Sections nest: a parent's time includes its
// children's. Thread-safe only from the thread that drives the step (the sections are never inside OpenMP).
#pragma once
#include <chrono>
#include <string>

namespace dsv3::train {

bool profiling_enabled();
void profile_add(const char* name, double seconds);
// "name  total ms  ms/step  %" lines, sorted by total time, for `steps` steps of `step_seconds` total.
std::string profile_report(int64_t steps, double step_seconds);
void profile_reset();

class ProfileScope {
 public:
  explicit ProfileScope(const char* name) : name_(profiling_enabled() ? name : nullptr) {
    if (name_) t0_ = std::chrono::steady_clock::now();
  }
  ~ProfileScope() {
    if (name_) profile_add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace dsv3::train
