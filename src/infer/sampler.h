// Sampler: next-token choice from one row of logits, with the usual knobs of OpenAI-style servers.
//
// Order of operations (documented in docs/inference.md; the same as vLLM / HF generate):
//   1. logprobs (when asked) are reported from log_softmax of the RAW logits (vLLM's default "raw_logprobs"),
//      for the chosen token and the top-n alternatives;
//   2. logit_bias[id] is added (OpenAI);
//   3. repetition penalty (CTRL paper / HF RepetitionPenaltyLogitsProcessor / llama.cpp penalty_repeat): for
//      every distinct id among the prompt and generated tokens (the last repetition_last_n of them if > 0):
//      logit > 0 ? logit / r : logit · r;
//   4. presence / frequency penalties (OpenAI): logit −= presence·[c > 0] + frequency·c, with c the count of the
//      id among the GENERATED tokens only;
//   5. temperature 0 → greedy (argmax, lowest id on ties); else logits / T, then top-k, then top-p (the
//      smallest set of most-probable tokens whose probability reaches p), then min-p (keep p_i ≥ min_p·p_max)
//      — each filter on the distribution renormalised after the previous one (HF warper order);
//   6. one uniform draw u = U(seed, n) in [0, 1) — Philox, a function of (seed, n) only, n = index of the
//      generated token — picks the token by inverse CDF over the kept tokens, walked in descending
//      probability (ties by id) when top-k is set, else in id order.
// So a request's output depends on its own seed and history only, never on what else is in the batch.
#pragma once
#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dsv3::infer {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  uint64_t seed = 0;
  float presence_penalty = 0.0f;   // OpenAI range [-2, 2]
  float frequency_penalty = 0.0f;  // OpenAI range [-2, 2]
  float repetition_penalty = 1.0f;  // 1 = off; > 0
  int32_t repetition_last_n = 0;    // window of the repetition penalty over prompt+generated; 0 = all
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias added to its logit)
  bool logprobs = false;   // report the chosen token's logprob
  int32_t top_logprobs = 0;  // and this many alternatives (0..20)

  void validate(int64_t vocab_size) const;  // throws dsv3::Error naming the bad field
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = 0;
  float logprob = 0.0f;              // of the chosen token under the raw distribution (if logprobs)
  std::vector<TokenLogprob> top;     // top_logprobs alternatives, most likely first
};

// A request's token history for the penalties: prompt + generated ids and generated-id counts.
class TokenHistory {
 public:
  void reset(std::span<const int32_t> prompt);
  void push_generated(int32_t id);
  const std::vector<int32_t>& all() const { return all_; }
  const std::unordered_map<int32_t, int32_t>& generated_counts() const { return counts_; }
  int64_t n_generated() const { return n_generated_; }

 private:
  std::vector<int32_t> all_;
  std::unordered_map<int32_t, int32_t> counts_;
  int64_t n_generated_ = 0;
};

// Holds vocab-sized workspace; one per engine thread.
class Sampler {
 public:
  explicit Sampler(int64_t vocab_size);
  // draw_index: n for the n-th generated token of the request (0-based).
  SampleResult sample(const float* logits, const SamplingParams& p, const TokenHistory& history,
                      uint64_t draw_index);
  // Steps 2-4 only (bias and penalties), into out [vocab]; exposed for tests and for greedy callers.
  void processed_logits(const float* logits, const SamplingParams& p, const TokenHistory& history, float* out);
  // The uniform draw used for (seed, n): 53-bit double from one Philox block.
  static double uniform(uint64_t seed, uint64_t draw_index);

 private:
  int32_t draw(const SamplingParams& p, uint64_t draw_index);  // steps 5-6 on work_ (temperature > 0)

  int64_t V_;
  std::vector<float> work_;             // processed logits
  std::vector<int32_t> idx_;            // candidate ids
  std::vector<double> prob_;            // candidate probabilities
  std::vector<uint8_t> seen_;           // marks (repetition penalty, top-p cut bucket)
  std::vector<int32_t> tmp_;            // tokens of the top-p cut bucket
  std::vector<double> bucket_mass_;     // top-p mass per logit-distance bucket
};

}  // namespace dsv3::infer
