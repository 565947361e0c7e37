// Engine: continuous-batching generation over token ids (DESIGN.md: HTTP/CLI → server → engine → model).
//
// One owner thread runs steps; other threads only submit / cancel (thread-safe) and receive TokenEvents
// through per-request callbacks, which run ON THE ENGINE THREAD and must be quick (push to a queue).
// A step: take new requests and cancellations → admit waiting requests into free slots (attaching any cached
// prompt prefix) → plan rows under a token budget: one decode row for every running request past its prompt,
// then prefill chunks (≤ prefill_chunk tokens each) for the others → reserve cache blocks, preempting the most
// recently admitted request when the pool is full (its cache is dropped and recomputed later — bitwise the
// same thanks to the row-independent kernels, so its output does not change) → one Decoder::forward over all
// rows → sample one token for each request whose last row wanted logits → deliver, and finish on a stop token
// ("stop"), max_tokens or the context limit ("length"), or cancellation ("cancelled").
//
// The engine deals in token ids only: stop strings are the server's job (StopStringMatcher helps), the
// tokenizer is not known here. Sampling follows sampler.h; a request's draws depend on its seed and the
// index of the token only, so outputs do not depend on batching, admission order or preemption.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "infer/decode.h"
#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "model/weights.h"

namespace dsv3::infer {

struct EngineConfig {
  int64_t max_slots = 8;          // requests decoded concurrently (KV cache sequences)
  int64_t kv_token_budget = 0;    // tokens in the KV pool; 0 = max_slots × max_seq_len
  int64_t block_size = 16;        // tokens per KV block
  int64_t max_seq_len = 0;        // context limit (prompt + generated); 0 = max_position_embeddings
  int64_t prefill_chunk = 256;    // prompt tokens per request per step
  int64_t max_step_tokens = 512;  // rows per step (decode rows + prefill chunks)
  bool prefix_cache = true;       // reuse cached KV blocks of a shared prompt prefix
  // KV-cache rows: F32 (F32 latent attention) or BF16 (BF16 latent attention: half the cache bytes, ~2x faster
  // attention in prefill; decode.h AttnPrecision).
  DType kv_dtype = DType::F32;
  void validate() const;
};

// The KV-cache row type for a `--kv-cache` name: "f32", "bf16", or "auto": BF16 when the Linear weights are
// held in BF16 or FP8 and the BF16 latent attention can run (AVX512-BF16 build, kv_lora_rank % 16 == 0), else
// F32 (F32 models keep the F32 cache their references use). Throws on other names or an unusable "bf16".
DType kv_cache_dtype(std::string_view name, const InferWeights& w);

struct GenerationRequest {
  std::vector<int32_t> prompt;           // token ids (BOS included if wanted)
  SamplingParams sampling;
  int64_t max_tokens = 16;               // generated tokens at most
  std::vector<int32_t> stop_token_ids;   // extra stop ids
  bool ignore_eos = false;               // if false, the config's eos_token_id stops generation
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
std::string_view finish_reason_name(FinishReason r);  // "", "stop", "length", "cancelled", "error"

// One delivery to a request's callback: a generated token and/or the end of the request.
struct TokenEvent {
  uint64_t request_id = 0;
  int32_t token = -1;          // -1 when the event only reports the end (cancelled, error)
  int64_t index = -1;          // 0-based index of the token among the generated ones
  bool is_stop_token = false;  // the token is the stop id that ended the request (servers usually hide it)
  float logprob = 0.0f;        // when sampling.logprobs
  std::vector<TokenLogprob> top_logprobs;
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  std::string error;           // for kError
  int64_t prompt_tokens = 0;   // on the final event: prompt length, and how many of its tokens came from
  int64_t cached_prompt_tokens = 0;  //   the prefix cache
};
using TokenCallback = std::function<void(const TokenEvent&)>;

struct EngineStats {
  int64_t steps = 0, prefill_tokens = 0, decode_tokens = 0, generated_tokens = 0;
  int64_t preemptions = 0, prefix_hit_tokens = 0;
  int64_t running = 0, waiting = 0;
  double forward_seconds = 0, sample_seconds = 0;
  StepStats last_step;
};

class Engine {
 public:
  Engine(const ModelWeights& w, const EngineConfig& cfg);  // F32 weights (shared, not copied)
  Engine(const InferWeights& w, const EngineConfig& cfg);  // weights in their resident format (BF16, FP8)
  ~Engine();  // stops the owner thread; unfinished requests get a "cancelled" event
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineConfig& config() const { return cfg_; }
  const KvCacheConfig& kv_config() const { return cache_.config(); }

  // Validates (throws dsv3::Error with the reason: empty prompt, id outside the vocabulary, prompt that
  // leaves no room in the context, bad sampling parameters) and queues the request. Thread-safe.
  uint64_t submit(GenerationRequest req, TokenCallback on_event);
  // Finishes the request with "cancelled" at the next step (no-op if unknown or already finished). Thread-safe.
  void cancel(uint64_t request_id);

  // Owner-thread mode: start() runs steps on an internal thread until stop().
  void start();
  void stop();
  // Synchronous mode (tests, CLI): run one step on the calling thread; false when there was nothing to do.
  bool step();
  void run_until_idle();
  bool idle() const;
  EngineStats stats() const;

 private:
  struct Active;  // a request inside the engine
  void intake();
  void admit();
  void preempt(Active& r);
  void finish(Active& r, FinishReason reason, const std::string& error = "");
  void emit(Active& r, TokenEvent& ev);
  void loop();

  ModelConfig model_cfg_;
  EngineConfig cfg_;
  KvCache cache_;
  Decoder decoder_;
  Sampler sampler_;
  std::vector<DecodeRow> rows_;
  std::vector<Active*> order_, sampled_;  // per-step scratch
  std::vector<float> logits_;  // [max_step_tokens, V]

  // Owner-thread state.
  std::deque<std::unique_ptr<Active>> waiting_;
  std::vector<std::unique_ptr<Active>> running_;  // admission order
  EngineStats stats_;

  // Shared with submitters.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Active>> incoming_;
  std::unordered_set<uint64_t> cancels_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int64_t> in_flight_{0};  // submitted and not finished
  EngineStats published_stats_;
  std::thread thread_;
  bool stopping_ = false;
};

// Stop strings for servers: feed decoded text pieces; push() returns the text that is safe to emit (held back
// while it could be the start of a stop string) and sets stopped() when a stop string appears (the text
// before it is returned, the stop string and everything after it are dropped).
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);
  std::string push(std::string_view text);
  std::string flush();  // the held-back tail at the end of generation ("" after a stop)
  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace dsv3::infer
