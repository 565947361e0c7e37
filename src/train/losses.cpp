// Loss pieces of V3_SPEC.md §5.2/§7 (see losses.h): shifted next-token targets and the sequence-wise
// balance loss with its affinity gradient. The cross-entropy kernels are ops::cross_entropy_* .
#include "train/losses.h"

#include "dsv3/error.h"

namespace dsv3::train {

std::vector<int32_t> shifted_targets(std::span<const int32_t> tokens, int64_t B, int64_t S, int64_t k,
                                     int64_t* n_valid) {
  DSV3_CHECK(int64_t(tokens.size()) == B * S, "targets: ", tokens.size(), " tokens for B=", B, ", S=", S);
  DSV3_CHECK(k >= 0 && k < S, "targets: depth ", k, " needs more than ", k, " tokens per sequence (S=", S, ")");
  const int64_t n = S - k;
  std::vector<int32_t> out(static_cast<size_t>(B * n), -1);
  int64_t valid = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i + k + 1 < S; ++i) {
      out[b * n + i] = tokens[b * S + i + k + 1];
      ++valid;
    }
  if (n_valid) *n_valid = valid;
  return out;
}

double seq_balance_forward(const ModelConfig& c, int64_t B, int64_t n, const float* affinity, const int32_t* idx,
                           double alpha, float* coeff) {
  const int64_t N = c.n_routed_experts, K = c.num_experts_per_tok;
  double loss = 0.0;
  std::vector<double> f(static_cast<size_t>(N)), P(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = b * n + i;
      for (int64_t k = 0; k < K; ++k) f[idx[t * K + k]] += 1.0;
      const float* s = affinity + t * N;
      double sum = 0.0;
      for (int64_t e = 0; e < N; ++e) sum += s[e];
      for (int64_t e = 0; e < N; ++e) P[e] += double(s[e]) / sum;
    }
    for (int64_t e = 0; e < N; ++e) {
      f[e] *= double(N) / (double(K) * double(n));
      P[e] /= double(n);
      loss += f[e] * P[e];
      coeff[b * N + e] = float(alpha * f[e] / (double(B) * double(n)));
    }
  }
  return alpha * loss / double(B);
}

void seq_balance_backward(int64_t B, int64_t n, int64_t N, const float* affinity, const float* coeff, float* ds) {
  for (int64_t b = 0; b < B; ++b) {
    const float* cb = coeff + b * N;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = b * n + i;
      const float* s = affinity + t * N;
      double sum = 0.0, dot = 0.0;
      for (int64_t e = 0; e < N; ++e) sum += s[e], dot += double(cb[e]) * s[e];
      dot /= sum;
      for (int64_t e = 0; e < N; ++e) ds[t * N + e] += float((double(cb[e]) - dot) / sum);
    }
  }
}

}  // namespace dsv3::train
