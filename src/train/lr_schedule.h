// Schedules of the training recipe as functions of (step, tokens seen): the learning rate, and piecewise-constant
// values for the MTP weight λ and the bias update speed γ (V3_SPEC.md §7).
//
// LR kinds (step is 0-based; warm-up is always in steps and gives lr = peak·(step+1)/warmup_steps, so the
// first step does not waste a zero-LR update):
//   "constant": warm-up, then peak.
//   "cosine":   warm-up, then peak → min by a half cosine over [warmup_steps, decay_end), then min.
//               decay_end defaults to the run's total steps.
//   "wsd":      the paper's warm-up → constant → cosine → constants: peak until constant_end, cosine to min over
//               [constant_end, decay_end), then min, then each tail [start, lr] pair from its start on.
//               Paper: warmup 2000 steps, constant_end 10T tokens, decay_end 14.3T, min 2.2e-5,
//               tail [[14.633e12, 7.3e-6]] (unit "tokens"); configs/train/paper_schedule.json.
// constant_end / decay_end / tail starts are in `unit`: "steps" or "tokens" (tokens seen before this step).
// Piecewise constant (λ, γ): JSON number (constant) or {"unit": "steps"|"tokens", "points": [[start, value], …]}:
// the value of the last point whose start ≤ x (the first point's value before it).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace dsv3::train {

enum class ScheduleUnit { kSteps, kTokens };

struct LrSchedule {
  std::string kind = "cosine";  // constant | cosine | wsd
  double peak = 2.2e-4;
  double min = 2.2e-5;
  int64_t warmup_steps = 0;
  ScheduleUnit unit = ScheduleUnit::kSteps;
  double constant_end = 0;  // wsd only
  double decay_end = 0;     // cosine (0: total steps) and wsd
  std::vector<std::pair<double, double>> tail;  // wsd only: [start, lr], increasing starts

  // lr for the 0-based step that starts after `tokens` tokens; total_steps resolves decay_end = 0 for "cosine".
  double at(int64_t step, double tokens, int64_t total_steps) const;

  static LrSchedule from_json(const nlohmann::json& j);  // validates; throws dsv3::Error naming the field
  nlohmann::json to_json() const;
};

struct PiecewiseConstant {
  ScheduleUnit unit = ScheduleUnit::kSteps;
  std::vector<std::pair<double, double>> points;  // [start, value], increasing starts; at least one

  static PiecewiseConstant constant(double v) { return {ScheduleUnit::kSteps, {{0.0, v}}}; }
  double at(int64_t step, double tokens) const;

  static PiecewiseConstant from_json(const nlohmann::json& j, const std::string& field);
  nlohmann::json to_json() const;  // a plain number when constant
};

}  // namespace dsv3::train
