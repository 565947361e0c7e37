// AdamW and the global gradient norm (see optimizer.h for the update rule).
#include "train/optimizer.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "dsv3/error.h"
#include "train/train_model.h"

namespace dsv3::train {

namespace {

constexpr int64_t kNormChunk = 1 << 16;

// f64 sum of squares of n floats in fixed chunks, combined in chunk order.
double sum_squares(const float* p, int64_t n) {
  const int64_t n_chunks = (n + kNormChunk - 1) / kNormChunk;
  std::vector<double> part(size_t(std::max<int64_t>(n_chunks, 1)), 0.0);
#pragma omp parallel for schedule(static) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b = c * kNormChunk, e = std::min(n, b + kNormChunk);
    double s = 0.0;
    for (int64_t i = b; i < e; ++i) s += double(p[i]) * double(p[i]);
    part[size_t(c)] = s;
  }
  double total = 0.0;
  for (double s : part) total += s;
  return total;
}

}  // namespace

double global_grad_norm(const ModelWeights& grad) {
  double total = 0.0;
  for (const auto& [name, g] : gradient_list(grad)) total += sum_squares(g.f32(), g.numel());
  return std::sqrt(total);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0.0 || !std::isfinite(norm)) return 1.0;
  const double s = max_norm / (norm + 1e-6);
  return s < 1.0 ? s : 1.0;
}

AdamW::AdamW(const ModelWeights& w, const AdamWOptions& opt) : opt_(opt) {
  DSV3_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1, "AdamW: betas must be in [0, 1), got ",
             opt.beta1, ", ", opt.beta2);
  DSV3_CHECK(opt.eps > 0, "AdamW: eps must be positive, got ", opt.eps);
  DSV3_CHECK(opt.weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ", opt.weight_decay);
  const DType mt = opt.bf16_moments ? DType::BF16 : DType::F32;
  ModelWeights shape_only = zero_gradients(w);  // for gradient_list's order and the trainable set
  for (const auto& [name, g] : gradient_list(shape_only)) {
    Slot s;
    s.name = name;
    s.m = Tensor::zeros(g.shape, mt);
    s.v = Tensor::zeros(g.shape, mt);
    s.decay = decays(g.shape);
    slots_.push_back(std::move(s));
  }
}

void AdamW::step(ModelWeights& w, const ModelWeights& grad, double lr, double grad_scale) {
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, double(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, double(t_));
  const float step_size = float(lr / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float b1 = float(opt_.beta1), b2 = float(opt_.beta2);
  const float one_b1 = float(1.0 - opt_.beta1), one_b2 = float(1.0 - opt_.beta2);
  const float eps = float(opt_.eps), gs = float(grad_scale);
  // Tensors are looked up first, then updated in parallel one tensor per task (most are expert matrices too small
  // to split); every element's update is independent, so the result does not depend on the thread count.
  std::vector<std::pair<float*, const float*>> ptrs(slots_.size());
  for (size_t k = 0; k < slots_.size(); ++k) {
    Slot& s = slots_[k];
    auto pit = w.by_name.find(s.name);
    auto git = grad.by_name.find(s.name);
    DSV3_CHECK(pit != w.by_name.end() && git != grad.by_name.end(), "AdamW: parameter ", s.name, " missing");
    DSV3_ASSERT(pit->second.numel() == s.m.numel() && pit->second.numel() == git->second.numel());
    ptrs[k] = {pit->second.f32(), git->second.f32()};
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t k = 0; k < slots_.size(); ++k) {
    Slot& s = slots_[k];
    float* p = ptrs[k].first;
    const float* g = ptrs[k].second;
    const int64_t n = s.m.numel();
    const float decay = s.decay ? float(1.0 - lr * opt_.weight_decay) : 1.0f;
    if (!opt_.bf16_moments) {
      float* m = s.m.f32();
      float* v = s.v.f32();
      for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i] * gs;
        const float mi = b1 * m[i] + one_b1 * gi;
        const float vi = b2 * v[i] + one_b2 * gi * gi;
        m[i] = mi, v[i] = vi;
        const float denom = std::sqrt(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * (mi / denom);
      }
    } else {
      uint16_t* m = s.m.ptr<uint16_t>();
      uint16_t* v = s.v.ptr<uint16_t>();
      for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i] * gs;
        m[i] = f32_to_bf16(b1 * bf16_to_f32(m[i]) + one_b1 * gi);
        v[i] = f32_to_bf16(b2 * bf16_to_f32(v[i]) + one_b2 * gi * gi);
        // The update uses the stored (rounded) moments, so a resumed run sees exactly what this one saw.
        const float mr = bf16_to_f32(m[i]), vr = bf16_to_f32(v[i]);
        const float denom = std::sqrt(vr) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * (mr / denom);
      }
    }
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(slots_.size() * 2);
  for (const Slot& s : slots_) {
    out.emplace_back("exp_avg." + s.name, s.m);
    out.emplace_back("exp_avg_sq." + s.name, s.v);
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, Tensor>& tensors, int64_t steps_taken) {
  const DType mt = opt_.bf16_moments ? DType::BF16 : DType::F32;
  for (Slot& s : slots_) {
    for (auto [key, dst] : {std::pair{"exp_avg." + s.name, &s.m}, std::pair{"exp_avg_sq." + s.name, &s.v}}) {
      auto it = tensors.find(key);
      DSV3_CHECK(it != tensors.end(), "optimizer state is missing ", key);
      const Tensor& src = it->second;
      DSV3_CHECK(src.shape == dst->shape, "optimizer state ", key, " has shape ", shape_str(src.shape), ", expected ",
                 shape_str(dst->shape));
      DSV3_CHECK(src.dtype == mt, "optimizer state ", key, " is ", dtype_name(src.dtype), " but this run keeps ",
                 dtype_name(mt), " moments (adam.moments)");
      std::memcpy(dst->data, src.data, dst->nbytes());
    }
  }
  t_ = steps_taken;
}

}  // namespace dsv3::train
