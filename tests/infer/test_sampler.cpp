// Sampler (infer/sampler.h): greedy, temperature, top-k, top-p (minimal set), min-p, seeds (a draw depends on
// (seed, n) only), penalties with the OpenAI (presence/frequency) and CTRL/HF/llama.cpp (repetition) formulas,
// logit_bias, logprobs with top alternatives, and parameter validation.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "dsv3/error.h"
#include "infer/sampler.h"

using namespace dsv3;
using namespace dsv3::infer;

namespace {

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> z;
  for (double x : p) z.push_back(float(std::log(x)));
  return z;
}

// Set of tokens drawn over n draws (draw indices 0..n-1).
std::set<int32_t> drawn(Sampler& s, const std::vector<float>& z, const SamplingParams& p, int n = 3000) {
  TokenHistory h;
  std::set<int32_t> out;
  for (int i = 0; i < n; ++i) out.insert(s.sample(z.data(), p, h, uint64_t(i)).token);
  return out;
}

}  // namespace

TEST(Sampler, GreedyArgmaxLowestIdOnTies) {
  Sampler s(5);
  TokenHistory h;
  SamplingParams p;
  p.temperature = 0;
  std::vector<float> z = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s.sample(z.data(), p, h, 0).token, 1);
  EXPECT_EQ(s.sample(z.data(), p, h, 17).token, 1);
}

TEST(Sampler, SeedReproducibleAndCounterBased) {
  const int V = 50;
  Sampler s(V);
  TokenHistory h;
  std::vector<float> z(V);
  for (int i = 0; i < V; ++i) z[size_t(i)] = float(std::sin(i * 1.7));
  SamplingParams p;
  p.seed = 1234;
  std::vector<int32_t> a, b;
  for (int n = 0; n < 200; ++n) a.push_back(s.sample(z.data(), p, h, uint64_t(n)).token);
  // Same draws in reverse call order: each depends only on (seed, n).
  b.resize(200);
  for (int n = 199; n >= 0; --n) b[size_t(n)] = s.sample(z.data(), p, h, uint64_t(n)).token;
  EXPECT_EQ(a, b);
  p.seed = 1235;
  int differ = 0;
  for (int n = 0; n < 200; ++n) differ += s.sample(z.data(), p, h, uint64_t(n)).token != a[size_t(n)];
  EXPECT_GT(differ, 100);
  EXPECT_EQ(Sampler::uniform(9, 3), Sampler::uniform(9, 3));
  EXPECT_NE(Sampler::uniform(9, 3), Sampler::uniform(9, 4));
  for (int n = 0; n < 1000; ++n) {
    const double u = Sampler::uniform(77, uint64_t(n));
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(Sampler, TemperatureOneMatchesSoftmaxFrequencies) {
  const std::vector<double> probs = {0.5, 0.25, 0.15, 0.1};
  Sampler s(4);
  TokenHistory h;
  SamplingParams p;
  p.seed = 5;
  std::vector<float> z = log_probs(probs);
  for (float& x : z) x += 3.0f;  // shift-invariant
  const int n = 40000;
  std::map<int32_t, int> count;
  for (int i = 0; i < n; ++i) ++count[s.sample(z.data(), p, h, uint64_t(i)).token];
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(count[t] / double(n), probs[size_t(t)], 0.01) << t;
  // Temperature 2 flattens: p ∝ sqrt(probs).
  p.temperature = 2.0f;
  count.clear();
  double norm = 0;
  for (double q : probs) norm += std::sqrt(q);
  for (int i = 0; i < n; ++i) ++count[s.sample(z.data(), p, h, uint64_t(i)).token];
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(count[t] / double(n), std::sqrt(probs[size_t(t)]) / norm, 0.01) << t;
}

TEST(Sampler, TopK) {
  Sampler s(6);
  std::vector<float> z = log_probs({0.3, 0.05, 0.25, 0.2, 0.15, 0.05});
  SamplingParams p;
  p.top_k = 3;
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{0, 2, 3}));
  p.top_k = 1;
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{0}));
  p.top_k = 100;  // larger than the vocabulary: no-op
  EXPECT_EQ(drawn(s, z, p).size(), 6u);
}

TEST(Sampler, TopPKeepsTheMinimalSet) {
  Sampler s(4);
  std::vector<float> z = log_probs({0.15, 0.5, 0.05, 0.3});  // sorted: 1 (.5), 3 (.3), 0 (.15), 2 (.05)
  SamplingParams p;
  p.top_p = 0.49f;
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{1}));
  p.top_p = 0.79f;
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{1, 3}));
  p.top_p = 0.81f;
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{0, 1, 3}));
  p.top_p = 1.0f;
  EXPECT_EQ(drawn(s, z, p).size(), 4u);
  // Kept tokens are renormalised: with top_p 0.79, token 1 has probability .5/.8.
  p.top_p = 0.79f;
  TokenHistory h;
  int ones = 0;
  for (int i = 0; i < 20000; ++i) ones += s.sample(z.data(), p, h, uint64_t(i)).token == 1;
  EXPECT_NEAR(ones / 20000.0, 0.625, 0.01);
}

TEST(Sampler, TopPOnALargeVocabulary) {
  // 3 likely tokens among 20000: the prefix-sort path must find exactly them.
  const int V = 20000;
  Sampler s(V);
  std::vector<float> z(V, 0.0f);
  z[17] = 12.0f, z[4242] = 11.5f, z[19999] = 11.0f;  // together ≈ 0.9 of the mass
  SamplingParams p;
  p.top_p = 0.8f;
  EXPECT_EQ(drawn(s, z, p, 500), (std::set<int32_t>{17, 4242, 19999}));
  // top_p 0.99 needs most of the flat tail too: its best tokens are the lowest ids (ties by id), so every
  // tail token drawn must be among the first `needed` tail ids.
  p.top_p = 0.99f;
  const double top = 1.0 + std::exp(-0.5) + std::exp(-1.0), each = std::exp(-12.0);
  const double target = 0.99 * (top + (V - 3) * each);
  const int64_t needed = int64_t(std::ceil((target - top) / each));
  std::vector<int32_t> tail;
  for (int32_t i = 0; i < V; ++i)
    if (i != 17 && i != 4242 && i != 19999) tail.push_back(i);
  const int32_t last_kept = tail[size_t(needed - 1)];
  const std::set<int32_t> got = drawn(s, z, p, 800);  // ~39 distinct tail tokens expected
  EXPECT_GT(got.size(), 20u);
  for (int32_t t : got) {
    if (t != 17 && t != 4242 && t != 19999) {
      EXPECT_LE(t, last_kept + 1);
    }
  }
}

TEST(Sampler, MinP) {
  Sampler s(4);
  std::vector<float> z = log_probs({0.5, 0.3, 0.15, 0.05});
  SamplingParams p;
  p.min_p = 0.25f;  // keep p >= 0.125
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{0, 1, 2}));
  p.min_p = 0.5f;  // keep p >= 0.25
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{0, 1}));
  p.min_p = 1.0f;
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{0}));
}

TEST(Sampler, PenaltyFormulas) {
  Sampler s(6);
  const std::vector<float> z = {2.0f, -1.0f, 0.5f, -2.0f, 1.0f, 0.0f};
  TokenHistory h;
  const std::vector<int32_t> prompt = {1, 4, 4};
  h.reset(prompt);
  h.push_generated(0);
  h.push_generated(0);
  h.push_generated(2);
  SamplingParams p;
  std::vector<float> out(6);
  // OpenAI: logit -= presence·[c>0] + frequency·c over generated tokens only (1 and 4 are prompt-only).
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  s.processed_logits(z.data(), p, h, out.data());
  EXPECT_FLOAT_EQ(out[0], 2.0f - 0.5f - 0.25f * 2);
  EXPECT_FLOAT_EQ(out[2], 0.5f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(out[1], -1.0f);
  EXPECT_FLOAT_EQ(out[4], 1.0f);
  // CTRL / HF / llama.cpp: over prompt + generated, positive logits divided, negative multiplied, once per id.
  p = SamplingParams{};
  p.repetition_penalty = 2.0f;
  s.processed_logits(z.data(), p, h, out.data());
  EXPECT_FLOAT_EQ(out[0], 1.0f);
  EXPECT_FLOAT_EQ(out[1], -2.0f);
  EXPECT_FLOAT_EQ(out[2], 0.25f);
  EXPECT_FLOAT_EQ(out[4], 0.5f);
  EXPECT_FLOAT_EQ(out[3], -2.0f);  // not in the history
  EXPECT_FLOAT_EQ(out[5], 0.0f);
  // Window: only the last 2 tokens (0, 2).
  p.repetition_last_n = 2;
  s.processed_logits(z.data(), p, h, out.data());
  EXPECT_FLOAT_EQ(out[0], 1.0f);
  EXPECT_FLOAT_EQ(out[2], 0.25f);
  EXPECT_FLOAT_EQ(out[4], 1.0f);
  EXPECT_FLOAT_EQ(out[1], -1.0f);
  // Greedy sees the processed logits.
  p = SamplingParams{};
  p.temperature = 0;
  p.presence_penalty = 1.5f;
  EXPECT_EQ(s.sample(z.data(), p, h, 0).token, 4);
}

TEST(Sampler, LogitBias) {
  Sampler s(4);
  std::vector<float> z = log_probs({0.7, 0.1, 0.1, 0.1});
  SamplingParams p;
  p.logit_bias = {{0, -INFINITY}, {3, -100.0f}};
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{1, 2}));
  p.logit_bias = {{2, 100.0f}};
  EXPECT_EQ(drawn(s, z, p), (std::set<int32_t>{2}));
  p.temperature = 0;
  TokenHistory h;
  EXPECT_EQ(s.sample(z.data(), p, h, 0).token, 2);
}

TEST(Sampler, LogprobsFromRawLogits) {
  Sampler s(5);
  const std::vector<float> z = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  double lse = 0;
  for (float x : z) lse += std::exp(double(x));
  lse = std::log(lse);
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = true;
  p.top_logprobs = 3;
  p.logit_bias = {{2, 5.0f}};  // changes the choice, not the reported (raw) logprobs
  TokenHistory h;
  SampleResult r = s.sample(z.data(), p, h, 0);
  EXPECT_EQ(r.token, 2);
  EXPECT_NEAR(r.logprob, 2.0 - lse, 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 1);  // ties by id
  EXPECT_EQ(r.top[1].token, 3);
  EXPECT_EQ(r.top[2].token, 2);
  EXPECT_NEAR(r.top[0].logprob, 3.0 - lse, 1e-6);
}

TEST(Sampler, ValidateRejectsBadParams) {
  auto bad = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    EXPECT_THROW(p.validate(10), Error);
  };
  bad([](SamplingParams& p) { p.temperature = -1; });
  bad([](SamplingParams& p) { p.temperature = NAN; });
  bad([](SamplingParams& p) { p.top_p = 0; });
  bad([](SamplingParams& p) { p.top_p = 1.5f; });
  bad([](SamplingParams& p) { p.min_p = -0.1f; });
  bad([](SamplingParams& p) { p.top_k = -1; });
  bad([](SamplingParams& p) { p.repetition_penalty = 0; });
  bad([](SamplingParams& p) { p.top_logprobs = 21; });
  bad([](SamplingParams& p) { p.logit_bias = {{10, 1.0f}}; });
  bad([](SamplingParams& p) { p.logit_bias = {{1, NAN}}; });
  SamplingParams ok;
  EXPECT_NO_THROW(ok.validate(10));
}
