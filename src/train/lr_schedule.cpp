// Learning-rate and piecewise-constant schedules (see lr_schedule.h).
#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "dsv3/error.h"

namespace dsv3::train {

namespace {

ScheduleUnit parse_unit(const nlohmann::json& j, const std::string& field) {
  if (!j.contains("unit")) return ScheduleUnit::kSteps;
  DSV3_CHECK(j["unit"].is_string(), field, ".unit must be \"steps\" or \"tokens\"");
  const std::string u = j["unit"];
  DSV3_CHECK(u == "steps" || u == "tokens", field, ".unit must be \"steps\" or \"tokens\", got \"", u, "\"");
  return u == "steps" ? ScheduleUnit::kSteps : ScheduleUnit::kTokens;
}

const char* unit_name(ScheduleUnit u) { return u == ScheduleUnit::kSteps ? "steps" : "tokens"; }

std::vector<std::pair<double, double>> parse_points(const nlohmann::json& j, const std::string& field) {
  DSV3_CHECK(j.is_array(), field, " must be an array of [start, value] pairs");
  std::vector<std::pair<double, double>> out;
  for (const auto& p : j) {
    DSV3_CHECK(p.is_array() && p.size() == 2 && p[0].is_number() && p[1].is_number(), field,
               " must hold [start, value] number pairs, got ", p.dump());
    const double start = p[0], value = p[1];
    DSV3_CHECK(out.empty() || start > out.back().first, field, ": starts must increase (", start, " after ",
               out.back().first, ")");
    out.emplace_back(start, value);
  }
  return out;
}

// Cosine from a to b over x in [x0, x1).
double cosine(double a, double b, double x, double x0, double x1) {
  if (x1 <= x0) return b;
  const double f = std::clamp((x - x0) / (x1 - x0), 0.0, 1.0);
  return b + 0.5 * (a - b) * (1.0 + std::cos(std::numbers::pi * f));
}

}  // namespace

double LrSchedule::at(int64_t step, double tokens, int64_t total_steps) const {
  if (warmup_steps > 0 && step < warmup_steps) return peak * double(step + 1) / double(warmup_steps);
  const double x = unit == ScheduleUnit::kSteps ? double(step) : tokens;
  if (kind == "constant") return peak;
  if (kind == "cosine") {
    const double end = decay_end > 0 ? decay_end : double(total_steps);
    const double start = unit == ScheduleUnit::kSteps ? double(warmup_steps) : 0.0;
    return x >= end ? min : cosine(peak, min, x, start, end);
  }
  // wsd
  if (x < constant_end) return peak;
  if (x < decay_end) return cosine(peak, min, x, constant_end, decay_end);
  double lr = min;
  for (const auto& [start, v] : tail)
    if (x >= start) lr = v;
  return lr;
}

LrSchedule LrSchedule::from_json(const nlohmann::json& j) {
  DSV3_CHECK(j.is_object(), "lr must be an object, got ", j.dump());
  static const std::vector<std::string> known = {"kind", "peak", "min", "warmup_steps", "unit", "constant_end",
                                                 "decay_end", "tail"};
  for (const auto& [k, v] : j.items())
    DSV3_CHECK(std::find(known.begin(), known.end(), k) != known.end(), "lr: unknown field \"", k, "\"");
  LrSchedule s;
  auto num = [&](const char* k, double& dst) {
    if (!j.contains(k)) return;
    DSV3_CHECK(j[k].is_number(), "lr.", k, " must be a number");
    dst = j[k];
  };
  if (j.contains("kind")) {
    DSV3_CHECK(j["kind"].is_string(), "lr.kind must be a string");
    s.kind = j["kind"];
  }
  DSV3_CHECK(s.kind == "constant" || s.kind == "cosine" || s.kind == "wsd", "lr.kind must be constant, cosine or wsd, got \"",
             s.kind, "\"");
  num("peak", s.peak);
  num("min", s.min);
  double w = 0;
  num("warmup_steps", w);
  DSV3_CHECK(w >= 0 && w == std::floor(w), "lr.warmup_steps must be a non-negative integer");
  s.warmup_steps = int64_t(w);
  s.unit = parse_unit(j, "lr");
  num("constant_end", s.constant_end);
  num("decay_end", s.decay_end);
  if (j.contains("tail")) s.tail = parse_points(j["tail"], "lr.tail");
  DSV3_CHECK(s.peak >= 0 && s.min >= 0, "lr.peak and lr.min must be >= 0");
  if (s.kind == "wsd")
    DSV3_CHECK(s.decay_end >= s.constant_end, "lr: decay_end (", s.decay_end, ") must be >= constant_end (",
               s.constant_end, ")");
  return s;
}

nlohmann::json LrSchedule::to_json() const {
  nlohmann::json j = {{"kind", kind}, {"peak", peak}, {"min", min}, {"warmup_steps", warmup_steps},
                      {"unit", unit_name(unit)}, {"decay_end", decay_end}};
  if (kind == "wsd") {
    j["constant_end"] = constant_end;
    j["tail"] = nlohmann::json::array();
    for (const auto& [a, b] : tail) j["tail"].push_back({a, b});
  }
  return j;
}

double PiecewiseConstant::at(int64_t step, double tokens) const {
  DSV3_ASSERT(!points.empty());
  const double x = unit == ScheduleUnit::kSteps ? double(step) : tokens;
  double v = points.front().second;
  for (const auto& [start, value] : points)
    if (x >= start) v = value;
  return v;
}

PiecewiseConstant PiecewiseConstant::from_json(const nlohmann::json& j, const std::string& field) {
  if (j.is_number()) return constant(j.get<double>());
  DSV3_CHECK(j.is_object() && j.contains("points"), field,
             " must be a number or {\"unit\": \"steps\"|\"tokens\", \"points\": [[start, value], ...]}");
  for (const auto& [k, v] : j.items())
    DSV3_CHECK(k == "unit" || k == "points", field, ": unknown field \"", k, "\"");
  PiecewiseConstant p;
  p.unit = parse_unit(j, field);
  p.points = parse_points(j["points"], field + ".points");
  DSV3_CHECK(!p.points.empty(), field, ".points is empty");
  return p;
}

nlohmann::json PiecewiseConstant::to_json() const {
  if (points.size() == 1 && points[0].first == 0.0) return points[0].second;
  nlohmann::json pts = nlohmann::json::array();
  for (const auto& [a, b] : points) pts.push_back({a, b});
  return {{"unit", unit_name(unit)}, {"points", pts}};
}

}  // namespace dsv3::train
