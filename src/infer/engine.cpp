// Continuous-batching engine: scheduler, preemption, sampling, delivery (see engine.h).
#include "infer/engine.h"

#include <algorithm>
#include <chrono>

#include "dsv3/error.h"
#include "infer/latent_attention.h"

namespace dsv3::infer {

std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "";
}

void EngineConfig::validate() const {
  DSV3_CHECK(max_slots > 0, "engine: max_slots must be positive, got ", max_slots);
  DSV3_CHECK(kv_token_budget >= 0, "engine: kv_token_budget must be >= 0, got ", kv_token_budget);
  DSV3_CHECK(block_size > 0, "engine: block_size must be positive, got ", block_size);
  DSV3_CHECK(max_seq_len >= 0, "engine: max_seq_len must be >= 0, got ", max_seq_len);
  DSV3_CHECK(prefill_chunk > 0, "engine: prefill_chunk must be positive, got ", prefill_chunk);
  DSV3_CHECK(max_step_tokens >= max_slots, "engine: max_step_tokens (", max_step_tokens,
             ") must be at least max_slots (", max_slots, ") so every running request can decode each step");
  DSV3_CHECK(kv_dtype == DType::F32 || kv_dtype == DType::BF16, "engine: the KV cache holds f32 or bf16 rows, got ",
             dtype_name(kv_dtype));
  DSV3_CHECK(kv_dtype != DType::BF16 || block_size % 2 == 0, "engine: a BF16 KV cache needs an even block_size, got ",
             block_size);
}

DType kv_cache_dtype(std::string_view name, const InferWeights& w) {
  const bool bf16_ok = latent_attention_bf16_available() && w.cfg.kv_lora_rank % 16 == 0;
  if (name == "f32") return DType::F32;
  if (name == "bf16") {
    DSV3_CHECK(bf16_ok, "a BF16 KV cache needs a build with AVX512-BF16 and kv_lora_rank % 16 == 0 (got ",
               w.cfg.kv_lora_rank, ")");
    return DType::BF16;
  }
  DSV3_CHECK(name == "auto", "KV cache type must be auto, f32 or bf16, got \"", name, "\"");
  return bf16_ok && w.dtype != DType::F32 ? DType::BF16 : DType::F32;
}

struct Engine::Active {
  uint64_t id = 0;
  GenerationRequest req;
  TokenCallback cb;
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_len = 0;
  int64_t n_generated = 0;
  int64_t n_cached = 0;         // tokens whose KV is in the cache
  int64_t cached_prompt = 0;    // prompt tokens served by the prefix cache at first admission
  int32_t seq = -1;             // KV sequence slot while admitted
  bool admitted_once = false;
  TokenHistory history;
  int64_t step_rows = 0;        // rows planned this step
  int64_t rank = 0;             // position in running_ (admission order) this step
  bool done = false;
};

namespace {
int64_t resolve_max_seq_len(const ModelConfig& mc, const EngineConfig& c) {
  const int64_t m = c.max_seq_len > 0 ? c.max_seq_len : mc.max_position_embeddings;
  DSV3_CHECK(m > 1, "engine: context limit must be > 1 token, got ", m);
  return m;
}
EngineConfig resolved(const ModelConfig& mc, EngineConfig c) {
  c.validate();
  c.max_seq_len = resolve_max_seq_len(mc, c);
  if (c.kv_token_budget == 0) c.kv_token_budget = c.max_slots * c.max_seq_len;
  return c;
}

KvCacheConfig cache_config(const ModelConfig& mc, const EngineConfig& c) {
  KvCacheConfig k = KvCacheConfig::for_model(mc, c.kv_token_budget, c.max_slots, c.max_seq_len, c.block_size);
  k.dtype = c.kv_dtype;
  return k;
}
}  // namespace

Engine::Engine(const ModelWeights& w, const EngineConfig& cfg) : Engine(InferWeights::from(w, DType::F32), cfg) {}

Engine::Engine(const InferWeights& w, const EngineConfig& cfg)
    : model_cfg_(w.cfg),
      cfg_(resolved(w.cfg, cfg)),
      cache_(cache_config(w.cfg, cfg_)),
      decoder_(w, cfg_.max_step_tokens, cfg_.max_seq_len,
               cfg_.kv_dtype == DType::BF16 ? AttnPrecision::kBF16 : AttnPrecision::kF32),
      sampler_(w.cfg.vocab_size) {
  rows_.reserve(size_t(cfg_.max_step_tokens));
  logits_.resize(size_t(cfg_.max_step_tokens * w.cfg.vocab_size));
}

Engine::~Engine() {
  stop();
  // Whatever is left is cancelled (callbacks still fire, on this thread).
  intake();
  for (auto& r : running_) finish(*r, FinishReason::kCancelled);
  for (auto& r : waiting_) finish(*r, FinishReason::kCancelled);
  running_.clear();
  waiting_.clear();
}

uint64_t Engine::submit(GenerationRequest req, TokenCallback on_event) {
  const ModelConfig& c = model_cfg_;
  DSV3_CHECK(!req.prompt.empty(), "request: the prompt is empty");
  for (size_t i = 0; i < req.prompt.size(); ++i)
    DSV3_CHECK(req.prompt[i] >= 0 && req.prompt[i] < c.vocab_size, "request: prompt token ", req.prompt[i],
               " at position ", i, " is outside the vocabulary [0, ", c.vocab_size, ")");
  DSV3_CHECK(int64_t(req.prompt.size()) < cfg_.max_seq_len, "request: the prompt has ", req.prompt.size(),
             " tokens; the context limit is ", cfg_.max_seq_len, " (prompt + at least one generated token)");
  DSV3_CHECK(int64_t(req.prompt.size()) + 1 <= cache_.config().token_capacity(), "request: the prompt has ",
             req.prompt.size(), " tokens; the KV cache holds ", cache_.config().token_capacity());
  DSV3_CHECK(req.max_tokens > 0, "request: max_tokens must be positive, got ", req.max_tokens);
  for (int32_t s : req.stop_token_ids)
    DSV3_CHECK(s >= 0 && s < c.vocab_size, "request: stop token id ", s, " is outside the vocabulary");
  req.sampling.validate(c.vocab_size);
  DSV3_CHECK(bool(on_event), "request: no callback");

  auto a = std::make_unique<Active>();
  a->id = next_id_.fetch_add(1);
  a->tokens = req.prompt;
  a->prompt_len = int64_t(req.prompt.size());
  a->history.reset(req.prompt);
  if (!req.ignore_eos && c.eos_token_id >= 0 && c.eos_token_id < c.vocab_size)
    req.stop_token_ids.push_back(int32_t(c.eos_token_id));
  a->req = std::move(req);
  a->cb = std::move(on_event);
  const uint64_t id = a->id;
  {
    std::lock_guard<std::mutex> lk(mu_);
    incoming_.push_back(std::move(a));
    ++in_flight_;
  }
  cv_.notify_one();
  return id;
}

void Engine::cancel(uint64_t request_id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.insert(request_id);
  }
  cv_.notify_one();
}

bool Engine::idle() const { return in_flight_.load() == 0; }

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return published_stats_;
}

void Engine::emit(Active& r, TokenEvent& ev) {
  ev.request_id = r.id;
  try {
    r.cb(ev);
  } catch (...) {
    // A throwing callback cancels its request; the engine carries on.
    if (!ev.finished) {
      std::lock_guard<std::mutex> lk(mu_);
      cancels_.insert(r.id);
    }
  }
}

void Engine::finish(Active& r, FinishReason reason, const std::string& error) {
  if (r.done) return;
  r.done = true;
  if (r.seq >= 0) {
    cache_.release(r.seq);
    r.seq = -1;
  }
  TokenEvent ev;
  ev.finished = true;
  ev.reason = reason;
  ev.error = error;
  ev.prompt_tokens = r.prompt_len;
  ev.cached_prompt_tokens = r.cached_prompt;
  emit(r, ev);
  --in_flight_;
}

void Engine::intake() {
  std::deque<std::unique_ptr<Active>> fresh;
  std::unordered_set<uint64_t> cancels;
  {
    std::lock_guard<std::mutex> lk(mu_);
    fresh.swap(incoming_);
    cancels.swap(cancels_);
  }
  for (auto& a : fresh) waiting_.push_back(std::move(a));
  if (cancels.empty()) return;
  for (auto& r : running_)
    if (cancels.count(r->id)) finish(*r, FinishReason::kCancelled);
  for (auto& r : waiting_)
    if (cancels.count(r->id)) finish(*r, FinishReason::kCancelled);
  std::erase_if(running_, [](const auto& r) { return r->done; });
  std::erase_if(waiting_, [](const auto& r) { return r->done; });
}

void Engine::admit() {
  while (!waiting_.empty() && int64_t(running_.size()) < cfg_.max_slots) {
    Active& r = *waiting_.front();
    const int32_t seq = cache_.acquire();
    if (seq < 0) break;
    r.seq = seq;
    r.n_cached = 0;
    if (cfg_.prefix_cache) {
      // Reuse at most all but the last known token: the step needs one row to produce logits.
      r.n_cached = cache_.attach_prefix(seq, r.tokens, int64_t(r.tokens.size()) - 1);
      stats_.prefix_hit_tokens += r.n_cached;
    }
    if (!r.admitted_once) r.cached_prompt = std::min(r.n_cached, r.prompt_len);
    r.admitted_once = true;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void Engine::preempt(Active& r) {
  cache_.release(r.seq);
  r.seq = -1;
  r.n_cached = 0;
  r.step_rows = 0;
  ++stats_.preemptions;
}

bool Engine::step() {
  intake();
  admit();
  if (running_.empty()) {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.running = 0;
    stats_.waiting = int64_t(waiting_.size());
    published_stats_ = stats_;
    return false;
  }
  const ModelConfig& c = model_cfg_;
  const int64_t V = c.vocab_size;

  // Plan: decode rows first, then prefill chunks, each group in admission order, within the step budget.
  // Reserve blocks; when the pool runs out, preempt the most recently admitted request that is newer than
  // the one being planned (so the oldest request can always make progress); if there is none, the request
  // waits for a later step.
  int64_t budget = cfg_.max_step_tokens;
  for (size_t i = 0; i < running_.size(); ++i) running_[i]->step_rows = 0, running_[i]->rank = int64_t(i);
  order_.clear();
  for (auto& r : running_)
    if (int64_t(r->tokens.size()) - r->n_cached == 1) order_.push_back(r.get());
  for (auto& r : running_)
    if (int64_t(r->tokens.size()) - r->n_cached > 1) order_.push_back(r.get());
  bool any_preempted = false;
  for (Active* r : order_) {
    if (r->seq < 0 || budget == 0) continue;  // preempted earlier in this loop, or out of budget
    const int64_t n = std::min({int64_t(r->tokens.size()) - r->n_cached, cfg_.prefill_chunk, budget});
    while (!cache_.reserve(r->seq, r->n_cached + n)) {
      Active* victim = nullptr;
      for (auto it = running_.rbegin(); it != running_.rend() && (*it)->rank > r->rank; ++it)
        if ((*it)->seq >= 0) {
          victim = it->get();
          break;
        }
      if (!victim) break;
      budget += victim->step_rows;
      preempt(*victim);
      any_preempted = true;
    }
    if (cache_.capacity(r->seq) < r->n_cached + n) continue;  // waits for blocks
    r->step_rows = n;
    budget -= n;
  }
  // Preempted requests go back to the front of the queue (oldest first), keeping their generated tokens.
  if (any_preempted) {
    for (auto it = running_.rbegin(); it != running_.rend(); ++it)
      if ((*it)->seq < 0) waiting_.push_front(std::move(*it));
    std::erase_if(running_, [](const auto& r) { return !r; });
  }

  rows_.clear();
  sampled_.clear();
  for (auto& r : running_) {
    for (int64_t i = 0; i < r->step_rows; ++i) {
      const int64_t p = r->n_cached + i;
      const bool last = p + 1 == int64_t(r->tokens.size());
      rows_.push_back({r->seq, p, r->tokens[size_t(p)], last});
      if (last) sampled_.push_back(r.get());
    }
  }
  if (rows_.empty()) {
    // Nothing fits (a single request larger than the pool): fail the oldest running request.
    DSV3_ASSERT(!running_.empty());
    finish(*running_.front(), FinishReason::kError, "the KV cache is too small for this request");
    std::erase_if(running_, [](const auto& r) { return r->done; });
    return true;
  }

  const auto t0 = std::chrono::steady_clock::now();
  try {
    decoder_.forward(rows_, cache_, logits_.data());
  } catch (const std::exception& e) {
    for (auto& r : running_) finish(*r, FinishReason::kError, e.what());
    running_.clear();
    return true;
  }
  const auto t1 = std::chrono::steady_clock::now();
  stats_.forward_seconds += std::chrono::duration<double>(t1 - t0).count();
  ++stats_.steps;
  stats_.last_step = decoder_.last_stats();
  for (auto& r : running_) {
    if (r->step_rows == 0) continue;
    // A decode row: the only uncached token of a request that has generated already; all else is prefill
    // (including recomputation after preemption).
    if (int64_t(r->tokens.size()) - r->n_cached == 1 && r->n_generated > 0) ++stats_.decode_tokens;
    else stats_.prefill_tokens += r->step_rows;
    r->n_cached += r->step_rows;
    if (cfg_.prefix_cache) cache_.publish_prefix(r->seq, r->tokens);
  }

  // Sample, deliver, finish.
  for (size_t i = 0; i < sampled_.size(); ++i) {
    Active& r = *sampled_[i];
    const SampleResult s = sampler_.sample(logits_.data() + int64_t(i) * V, r.req.sampling, r.history,
                                           uint64_t(r.n_generated));
    r.tokens.push_back(s.token);
    r.history.push_generated(s.token);
    TokenEvent ev;
    ev.token = s.token;
    ev.index = r.n_generated++;
    ev.logprob = s.logprob;
    ev.top_logprobs = s.top;
    ++stats_.generated_tokens;
    FinishReason reason = FinishReason::kNone;
    if (std::find(r.req.stop_token_ids.begin(), r.req.stop_token_ids.end(), s.token) != r.req.stop_token_ids.end()) {
      reason = FinishReason::kStop;
      ev.is_stop_token = true;
    } else if (r.n_generated >= r.req.max_tokens || int64_t(r.tokens.size()) >= cfg_.max_seq_len) {
      reason = FinishReason::kLength;
    }
    if (reason != FinishReason::kNone) {
      ev.finished = true;
      ev.reason = reason;
      ev.prompt_tokens = r.prompt_len;
      ev.cached_prompt_tokens = r.cached_prompt;
      r.done = true;
      cache_.release(r.seq);
      r.seq = -1;
      emit(r, ev);
      --in_flight_;
    } else {
      emit(r, ev);
    }
  }
  stats_.sample_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  std::erase_if(running_, [](const auto& r) { return r->done; });
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.running = int64_t(running_.size());
    stats_.waiting = int64_t(waiting_.size());
    published_stats_ = stats_;
  }
  return true;
}

void Engine::run_until_idle() {
  while (!idle()) step();
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] {
        return stopping_ || !incoming_.empty() || !cancels_.empty() || !running_.empty() || !waiting_.empty();
      });
      if (stopping_) return;
    }
    step();
  }
}

void Engine::start() {
  std::lock_guard<std::mutex> lk(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

// ---- stop strings ----

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string StopStringMatcher::push(std::string_view text) {
  if (stopped_) return "";
  pending_.append(text);
  // Earliest complete stop string.
  size_t best = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t at = pending_.find(s);
    if (at != std::string::npos && (best == std::string::npos || at < best)) best = at, matched_ = s;
  }
  if (best != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, best);
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len)
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::flush() {
  if (stopped_) return "";
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace dsv3::infer
