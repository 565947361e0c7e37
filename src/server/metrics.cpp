// Prometheus text rendering of the server metrics (see metrics.h).
#include "server/metrics.h"

#include <cstdio>

namespace dsv3::server {

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++requests_[{endpoint, status}];
}
void Metrics::add_prompt_tokens(int64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  prompt_tokens_ += n;
}
void Metrics::add_completion_tokens(int64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  completion_tokens_ += n;
}
void Metrics::count_cancelled(int64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  cancelled_ += n;
}
void Metrics::count_rejected() {
  std::lock_guard<std::mutex> lk(mu_);
  ++rejected_;
}
int64_t Metrics::cancelled() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cancelled_;
}

namespace {
void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
  out += buf;
}
}  // namespace

std::string Metrics::render(const MetricsSnapshot& s) {
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = std::chrono::steady_clock::now();
  samples_.emplace_back(now, s.engine.generated_tokens);
  while (samples_.size() > 2 && now - samples_[1].first >= std::chrono::seconds(10)) samples_.pop_front();
  double rate = 0.0;
  if (samples_.size() >= 2) {
    const double dt = std::chrono::duration<double>(now - samples_.front().first).count();
    if (dt > 0) rate = double(s.engine.generated_tokens - samples_.front().second) / dt;
  }
  std::string out;
  out += "# HELP dsv3_requests_total HTTP requests answered, by endpoint and status code.\n"
         "# TYPE dsv3_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "dsv3_requests_total{endpoint=\"%s\",status=\"%d\"} %lld\n", key.first.c_str(),
                  key.second, (long long)n);
    out += buf;
  }
  metric(out, "dsv3_prompt_tokens_total", "counter", "Prompt tokens of accepted generation requests.",
         double(prompt_tokens_));
  metric(out, "dsv3_completion_tokens_total", "counter", "Completion tokens reported in usage.",
         double(completion_tokens_));
  metric(out, "dsv3_generation_tokens_total", "counter", "Tokens sampled by the engine (cancelled work included).",
         double(s.engine.generated_tokens));
  metric(out, "dsv3_prefill_tokens_total", "counter", "Prompt tokens computed by the engine.",
         double(s.engine.prefill_tokens));
  metric(out, "dsv3_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.",
         double(s.engine.prefix_hit_tokens));
  metric(out, "dsv3_preemptions_total", "counter", "Requests preempted when the KV cache was full.",
         double(s.engine.preemptions));
  metric(out, "dsv3_engine_steps_total", "counter", "Engine steps run.", double(s.engine.steps));
  metric(out, "dsv3_generation_tokens_per_second", "gauge",
         "Tokens sampled per second over the last ~10 s (between scrapes).", rate);
  metric(out, "dsv3_requests_running", "gauge", "Engine requests holding a slot.", double(s.engine.running));
  metric(out, "dsv3_requests_waiting", "gauge", "Engine requests queued for a slot (queue depth).",
         double(s.engine.waiting));
  metric(out, "dsv3_choices_active", "gauge", "Choices submitted to the engine and not finished.",
         double(s.active_choices));
  metric(out, "dsv3_http_generations_active", "gauge", "Generation HTTP requests in progress.",
         double(s.active_requests));
  metric(out, "dsv3_requests_cancelled_total", "counter", "Choices cancelled because the client disconnected.",
         double(cancelled_));
  metric(out, "dsv3_requests_rejected_total", "counter", "Generation requests refused because the queue was full.",
         double(rejected_));
  metric(out, "dsv3_slots", "gauge", "Concurrent sequences the engine decodes.", double(s.slots));
  metric(out, "dsv3_kv_cache_tokens_used", "gauge",
         "KV-cache tokens (block-rounded) held by running choices; shared prefixes counted per choice.",
         double(s.kv_tokens_in_use));
  metric(out, "dsv3_kv_cache_tokens_capacity", "gauge", "KV-cache pool size in tokens.", double(s.kv_token_capacity));
  metric(out, "dsv3_kv_cache_usage_ratio", "gauge", "dsv3_kv_cache_tokens_used / dsv3_kv_cache_tokens_capacity.",
         s.kv_token_capacity > 0 ? std::min(1.0, double(s.kv_tokens_in_use) / double(s.kv_token_capacity)) : 0.0);
  return out;
}

}  // namespace dsv3::server
