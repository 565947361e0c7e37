// Token sampling: penalties, bias, temperature, top-k / top-p / min-p, counter-based draws (see sampler.h).
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/rng.h"
#include "dsv3/error.h"

namespace dsv3::infer {

namespace {
constexpr uint64_t kSamplerStream = 0x53414D504C45ull;  // "SAMPLE": the Philox stream of sampling draws
constexpr int32_t kMaxTopLogprobs = 20;
}  // namespace

void SamplingParams::validate(int64_t vocab_size) const {
  DSV3_CHECK(std::isfinite(temperature) && temperature >= 0.0f, "temperature must be >= 0, got ", temperature);
  DSV3_CHECK(top_k >= 0, "top_k must be >= 0 (0 = off), got ", top_k);
  DSV3_CHECK(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got ", top_p);
  DSV3_CHECK(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got ", min_p);
  DSV3_CHECK(std::isfinite(presence_penalty), "presence_penalty must be finite");
  DSV3_CHECK(std::isfinite(frequency_penalty), "frequency_penalty must be finite");
  DSV3_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f, "repetition_penalty must be > 0, got ",
             repetition_penalty);
  DSV3_CHECK(repetition_last_n >= 0, "repetition_last_n must be >= 0 (0 = all), got ", repetition_last_n);
  DSV3_CHECK(top_logprobs >= 0 && top_logprobs <= kMaxTopLogprobs, "top_logprobs must be in [0, ", kMaxTopLogprobs,
             "], got ", top_logprobs);
  for (const auto& [id, bias] : logit_bias) {
    DSV3_CHECK(id >= 0 && id < vocab_size, "logit_bias token id ", id, " is outside the vocabulary [0, ", vocab_size,
               ")");
    DSV3_CHECK(!std::isnan(bias), "logit_bias for token ", id, " is NaN");
  }
}

void TokenHistory::reset(std::span<const int32_t> prompt) {
  all_.assign(prompt.begin(), prompt.end());
  counts_.clear();
  n_generated_ = 0;
}

void TokenHistory::push_generated(int32_t id) {
  all_.push_back(id);
  ++counts_[id];
  ++n_generated_;
}

Sampler::Sampler(int64_t vocab_size) : V_(vocab_size) {
  DSV3_CHECK(vocab_size > 0, "sampler: vocabulary size must be positive");
  work_.resize(size_t(V_));
  idx_.resize(size_t(V_));
  prob_.resize(size_t(V_));
  seen_.assign(size_t(V_), 0);
  tmp_.resize(size_t(V_));
  bucket_mass_.resize(2048);  // 32 nats at 64 buckets per nat; anything further lands in the last one
}

double Sampler::uniform(uint64_t seed, uint64_t draw_index) {
  const auto w = philox4x32(seed, kSamplerStream, draw_index);
  const uint64_t bits = (uint64_t(w[0]) << 21) ^ (uint64_t(w[1]) >> 11);  // 53 random bits
  return double(bits & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void Sampler::processed_logits(const float* logits, const SamplingParams& p, const TokenHistory& history,
                               float* out) {
  const int64_t V = V_;
  std::copy(logits, logits + V, out);
  for (const auto& [id, bias] : p.logit_bias) out[id] += bias;
  if (p.repetition_penalty != 1.0f) {
    const auto& all = history.all();
    const size_t first =
        p.repetition_last_n > 0 && all.size() > size_t(p.repetition_last_n) ? all.size() - size_t(p.repetition_last_n) : 0;
    for (size_t i = first; i < all.size(); ++i) {
      const int32_t id = all[i];
      if (id < 0 || id >= V || seen_[size_t(id)]) continue;
      seen_[size_t(id)] = 1;
      float& z = out[id];
      z = z > 0.0f ? z / p.repetition_penalty : z * p.repetition_penalty;
    }
    for (size_t i = first; i < all.size(); ++i)
      if (all[i] >= 0 && all[i] < V) seen_[size_t(all[i])] = 0;
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f)
    for (const auto& [id, count] : history.generated_counts()) {
      if (id < 0 || id >= V || count <= 0) continue;
      out[id] -= p.presence_penalty + p.frequency_penalty * float(count);
    }
}

int32_t Sampler::draw(const SamplingParams& p, uint64_t draw_index) {
  const int64_t V = V_;
  // Candidates (finite logits) in id order, logits scaled by 1/T in place.
  const float inv_t = 1.0f / p.temperature;
  int64_t n = 0;
  float zmax = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < V; ++i) {
    const float z = work_[size_t(i)] * inv_t;
    work_[size_t(i)] = z;
    if (z == -std::numeric_limits<float>::infinity() || std::isnan(z)) continue;
    idx_[size_t(n++)] = int32_t(i);
    zmax = std::max(zmax, z);
  }
  DSV3_CHECK(n > 0, "sampler: every token has a -inf or NaN logit");
  const auto better = [&](int32_t a, int32_t b) {
    return work_[size_t(a)] > work_[size_t(b)] || (work_[size_t(a)] == work_[size_t(b)] && a < b);
  };
  const auto weight = [&](int32_t id) { return double(std::exp(work_[size_t(id)] - zmax)); };  // ∝ probability

  // top-k: the k best, in descending order.
  if (p.top_k > 0 && p.top_k < n) {
    std::nth_element(idx_.begin(), idx_.begin() + (p.top_k - 1), idx_.begin() + n, better);
    n = p.top_k;
    std::sort(idx_.begin(), idx_.begin() + n, better);
  }
  for (int64_t i = 0; i < n; ++i) prob_[size_t(i)] = weight(idx_[size_t(i)]);

  // top-p: the smallest set of most probable tokens with mass ≥ top_p. Tokens are bucketed by how far their
  // logit is below the max (kBucketsPerNat per nat), so only the bucket holding the cut needs sorting; the
  // kept tokens stay in their current order.
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += prob_[size_t(i)];
    const double target = double(p.top_p) * total;
    constexpr double kBucketsPerNat = 64.0;
    const int64_t B = int64_t(bucket_mass_.size());
    const auto bucket = [&](int32_t id) {
      return int64_t(std::min(double(B - 1), double(zmax - work_[size_t(id)]) * kBucketsPerNat));
    };
    std::fill(bucket_mass_.begin(), bucket_mass_.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) bucket_mass_[size_t(bucket(idx_[size_t(i)]))] += prob_[size_t(i)];
    int64_t cut = B - 1;
    double before = 0.0;  // mass of the buckets above the cut bucket
    for (int64_t b = 0; b < B; ++b) {
      if (before + bucket_mass_[size_t(b)] >= target) {
        cut = b;
        break;
      }
      before += bucket_mass_[size_t(b)];
    }
    // Exact order inside the cut bucket; take its best tokens until the mass is reached.
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
      if (bucket(idx_[size_t(i)]) == cut) tmp_[size_t(m++)] = idx_[size_t(i)];
    std::sort(tmp_.begin(), tmp_.begin() + m, better);
    double cum = before;
    for (int64_t i = 0; i < m; ++i) {
      seen_[size_t(tmp_[size_t(i)])] = 1;
      cum += weight(tmp_[size_t(i)]);
      if (cum >= target) break;
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = idx_[size_t(i)];
      const int64_t b = bucket(id);
      if (b < cut || (b == cut && seen_[size_t(id)])) {
        idx_[size_t(kept)] = id;
        prob_[size_t(kept)] = prob_[size_t(i)];
        ++kept;
      }
    }
    for (int64_t i = 0; i < m; ++i) seen_[size_t(tmp_[size_t(i)])] = 0;
    n = kept;
  }

  // min-p: keep p_i ≥ min_p · p_max (ratios are unchanged by renormalisation).
  if (p.min_p > 0.0f) {
    double pmax = 0.0;
    for (int64_t i = 0; i < n; ++i) pmax = std::max(pmax, prob_[size_t(i)]);
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
      if (prob_[size_t(i)] >= double(p.min_p) * pmax) {
        idx_[size_t(m)] = idx_[size_t(i)];
        prob_[size_t(m)] = prob_[size_t(i)];
        ++m;
      }
    n = m;
  }

  // 6. Inverse CDF over the kept tokens in their order (descending after top-k, else by id).
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += prob_[size_t(i)];
  const double target = uniform(p.seed, draw_index) * total;
  double cum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    cum += prob_[size_t(i)];
    if (target < cum) return idx_[size_t(i)];
  }
  return idx_[size_t(n - 1)];
}

SampleResult Sampler::sample(const float* logits, const SamplingParams& p, const TokenHistory& history,
                             uint64_t draw_index) {
  SampleResult res;
  const int64_t V = V_;

  // 1. Raw log-softmax normaliser (for logprobs).
  double lse = 0.0;
  const bool want_lp = p.logprobs || p.top_logprobs > 0;
  if (want_lp) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
    double s = 0.0;
    for (int64_t i = 0; i < V; ++i) s += std::exp(double(logits[i]) - double(mx));
    lse = double(mx) + std::log(s);
    if (p.top_logprobs > 0) {
      const int64_t n = std::min<int64_t>(p.top_logprobs, V);
      for (int64_t i = 0; i < V; ++i) idx_[size_t(i)] = int32_t(i);
      std::partial_sort(idx_.begin(), idx_.begin() + n, idx_.begin() + V, [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
      });
      for (int64_t i = 0; i < n; ++i)
        res.top.push_back({idx_[size_t(i)], float(double(logits[idx_[size_t(i)]]) - lse)});
    }
  }

  // 2-4. Processed logits: bias, repetition penalty, presence/frequency penalties.
  processed_logits(logits, p, history, work_.data());

  // 5. Greedy.
  if (p.temperature == 0.0f) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; ++i)
      if (work_[size_t(i)] > work_[size_t(best)]) best = i;
    res.token = int32_t(best);
  } else {
    res.token = draw(p, draw_index);
  }
  if (want_lp) res.logprob = float(double(logits[res.token]) - lse);
  return res;
}

}  // namespace dsv3::infer
