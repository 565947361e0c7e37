// Bias update of the auxiliary-loss-free balancing and MaxVio (see load_balance.h).
#include "train/load_balance.h"

#include <algorithm>

#include "dsv3/error.h"

namespace dsv3::train {

double max_violation(const std::vector<int64_t>& count) {
  if (count.empty()) return 0.0;
  int64_t total = 0, mx = 0;
  for (int64_t v : count) total += v, mx = std::max(mx, v);
  if (total == 0) return 0.0;
  const double mean = double(total) / double(count.size());
  return double(mx) / mean - 1.0;
}

std::vector<double> update_router_bias(ModelWeights& w, const std::vector<ExpertLoad>& loads, float gamma) {
  std::vector<double> vio;
  for (const ExpertLoad& ld : loads) {
    LayerWeights* L = nullptr;
    for (LayerWeights& cand : w.layers)
      if (cand.index == ld.layer) L = &cand;
    DSV3_CHECK(L && L->moe, "update_router_bias: layer ", ld.layer, " is not a loaded MoE layer");
    const int64_t N = L->router_bias.numel();
    DSV3_CHECK(int64_t(ld.count.size()) == N, "update_router_bias: layer ", ld.layer, " has ", ld.count.size(),
               " counts for ", N, " experts");
    int64_t total = 0;
    for (int64_t v : ld.count) total += v;
    float* b = L->router_bias.f32();
    // Compare load_i·N with the total instead of load_i with total/N: exact in integers, so a perfectly
    // balanced expert gets sign 0.
    for (int64_t i = 0; i < N; ++i) {
      const int64_t diff = total - ld.count[i] * N;  // ∝ mean_load − load_i
      const float sign = diff > 0 ? 1.0f : diff < 0 ? -1.0f : 0.0f;
      b[i] += gamma * sign;
    }
    vio.push_back(max_violation(ld.count));
  }
  return vio;
}

}  // namespace dsv3::train
