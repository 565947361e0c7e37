// Whole-model training forward / backward (see train_model.h): embedding, decoder layers, final norm, lm_head,
// MTP chain, and the loss of train/losses.h.
#include "train/train_model.h"

#include <cstring>
#include <optional>

#include "dsv3/error.h"
#include "kernels/backward_ops.h"
#include "kernels/ops.h"
#include "train/profile.h"

namespace dsv3::train {

ModelWeights zero_gradients(const ModelWeights& w) {
  ModelWeights g;
  g.cfg = w.cfg;
  for (const auto& [name, t] : w.by_name) g.by_name.emplace(name, Tensor::zeros(t.shape));
  g.bind();
  return g;
}

std::vector<std::pair<std::string, Tensor>> gradient_list(const ModelWeights& grad) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const TensorSpec& s : weight_specs(grad.cfg)) {
    if (s.role == TensorRole::kMtpCopy || s.role == TensorRole::kRouterBias) continue;
    auto it = grad.by_name.find(s.name);
    if (it != grad.by_name.end()) out.emplace_back(s.name, it->second);
  }
  return out;
}

namespace {

// Index of the layer with HF index `idx` in w.layers, or -1.
int64_t layer_pos(const ModelWeights& w, int64_t idx) {
  for (size_t i = 0; i < w.layers.size(); ++i)
    if (w.layers[i].index == idx) return int64_t(i);
  return -1;
}

void gather_embeddings(const ModelWeights& w, const int32_t* ids, int64_t rows, float* out) {
  const int64_t D = w.cfg.hidden_size;
  for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * D, w.embed.f32() + int64_t(ids[r]) * D, size_t(D) * 4);
}

// dE[ids[r]] += d[r] (rows in order: deterministic).
void scatter_embeddings(ModelWeights& g, const int32_t* ids, int64_t rows, const float* d) {
  const int64_t D = g.cfg.hidden_size;
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = g.embed.f32() + int64_t(ids[r]) * D;
    for (int64_t i = 0; i < D; ++i) dst[i] += d[r * D + i];
  }
}

}  // namespace

TrainModel::TrainModel(const ModelWeights& w, Precision precision, bool fp8_cache_activations)
    : w_(w), lin_(precision), fp8_cache_(fp8_cache_activations),
      head_(precision == Precision::kFP8 ? Precision::kBF16 : precision) {
  DSV3_CHECK(!fp8_cache_ || precision == Precision::kFP8, "FP8 activation caching needs precision fp8, got ",
             precision_name(precision));
}

const Tensor& TrainModel::mtp_logits(int depth) const {
  DSV3_CHECK(depth >= 1 && depth <= int(mtp_.size()), "mtp_logits: depth ", depth, " not computed (",
             mtp_.size(), " MTP depths ran)");
  return mtp_[depth - 1].logits;
}

std::vector<ExpertLoad> TrainModel::expert_load() const {
  std::vector<ExpertLoad> out;
  for (size_t l = 0; l < main_.size(); ++l)
    if (main_[l]->moe) out.push_back({main_[l]->index, states_[l].ffn.count});
  for (const Mtp& m : mtp_)
    if (m.W->moe) out.push_back({m.W->index, m.layer.ffn.count});
  return out;
}

LossValues TrainModel::forward(const TrainBatch& batch, const LossOptions& opt) {
  const ModelConfig& c = w_.cfg;
  const int64_t B = batch.B, S = batch.S, D = c.hidden_size, V = c.vocab_size, T = B * S;
  DSV3_CHECK(B > 0 && S >= 2, "train forward: need B ≥ 1 sequences of S ≥ 2 tokens, got B=", B, ", S=", S);
  DSV3_CHECK(int64_t(batch.tokens.size()) == T, "train forward: ", batch.tokens.size(), " tokens for B=", B, ", S=", S);
  for (int64_t i = 0; i < T; ++i)
    DSV3_CHECK(batch.tokens[i] >= 0 && batch.tokens[i] < V, "train forward: token id ", batch.tokens[i],
               " (sequence ", i / S, ", position ", i % S, ") is outside the vocabulary [0, ", V, ")");
  const int64_t n_mtp = c.num_nextn_predict_layers;
  const bool mtp_loaded = n_mtp > 0 && layer_pos(w_, c.num_hidden_layers) >= 0;
  DSV3_CHECK(n_mtp == 0 || mtp_loaded || opt.mtp_lambda == 0.0,
             "train forward: the config has ", n_mtp, " MTP depth(s) but their weights are not loaded");
  if (mtp_loaded)
    DSV3_CHECK(S >= n_mtp + 2, "train forward: MTP depth ", n_mtp, " needs S ≥ ", n_mtp + 2,
               " tokens per sequence, got ", S);
  batch_ = batch;
  opt_ = opt;
  loss_ = LossValues();
  lin_.begin_pass();  // the weights may have changed since the last pass
  head_.begin_pass();

  // Main model.
  ctx_main_.emplace(c, B, S, opt.balance_alpha);
  ctx_main_->lin = &lin_;
  ctx_main_->fp8_cache = fp8_cache_;
  main_.clear();
  for (const LayerWeights& L : w_.layers)
    if (!L.mtp) main_.push_back(&L);
  DSV3_CHECK(int64_t(main_.size()) == c.num_hidden_layers, "train forward: ", main_.size(), " main layers loaded, ",
             c.num_hidden_layers, " expected");
  states_.assign(main_.size(), LayerState());
  Tensor x = Tensor::empty({T, D});
  gather_embeddings(w_, batch_.tokens.data(), T, x.f32());
  for (size_t l = 0; l < main_.size(); ++l) {
    x = layer_forward(*ctx_main_, *main_[l], x, states_[l]);
    loss_.balance += states_[l].ffn.balance_loss;
  }
  x_last_ = x;
  std::optional<ProfileScope> prof;
  prof.emplace("model.fwd.head+ce");
  h_ = Tensor::empty({T, D});
  ops::rmsnorm(T, D, x.f32(), D, w_.final_norm.f32(), float(c.rms_norm_eps), h_.f32(), D);
  logits_ = Tensor::empty({T, V});
  head_.fprop(T, h_.f32(), D, w_.lm_head, logits_.f32(), V);
  targets_ = shifted_targets(batch_.tokens, B, S, 0, &n_valid_);
  loss_.main_ce = ops::cross_entropy_sum(T, V, logits_.f32(), V, targets_.data()) / double(n_valid_);

  // MTP chain.
  prof.emplace("model.fwd.mtp");
  mtp_.clear();
  mtp_.reserve(size_t(n_mtp));  // `prev` points into mtp_: no reallocation while the chain runs
  if (mtp_loaded) {
    const Tensor* prev = &h_;
    int64_t n_prev = S;
    for (int64_t k = 1; k <= n_mtp; ++k) {
      const int64_t n = S - k, Tk = B * n;
      const int64_t pos = layer_pos(w_, c.num_hidden_layers + k - 1);
      DSV3_CHECK(pos >= 0, "train forward: MTP depth ", k, " weights are not loaded");
      mtp_.emplace_back(BlockContext(c, B, n, 0.0));
      Mtp& m = mtp_.back();
      m.ctx.lin = &lin_;
      m.ctx.fp8_cache = fp8_cache_;
      m.W = &w_.layers[pos];
      m.n = n;
      std::vector<int32_t> ids(static_cast<size_t>(Tk));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n; ++i) ids[b * n + i] = batch_.tokens[b * S + i + k];
      m.e = Tensor::empty({Tk, D});
      gather_embeddings(w_, ids.data(), Tk, m.e.f32());
      m.hp = Tensor::empty({Tk, D});
      for (int64_t b = 0; b < B; ++b)
        std::memcpy(m.hp.f32() + b * n * D, prev->f32() + b * n_prev * D, size_t(n * D) * 4);
      m.cat = Tensor::empty({Tk, 2 * D});
      ops::rmsnorm(Tk, D, m.e.f32(), D, m.W->enorm.f32(), float(c.rms_norm_eps), m.cat.f32(), 2 * D);
      ops::rmsnorm(Tk, D, m.hp.f32(), D, m.W->hnorm.f32(), float(c.rms_norm_eps), m.cat.f32() + D, 2 * D);
      Tensor u = Tensor::empty({Tk, D});
      lin_.fprop(Tk, m.cat.f32(), 2 * D, m.W->eh_proj, u.f32(), D);
      m.x_out = layer_forward(m.ctx, *m.W, u, m.layer);
      m.h = Tensor::empty({Tk, D});
      ops::rmsnorm(Tk, D, m.x_out.f32(), D, m.W->head_norm.f32(), float(c.rms_norm_eps), m.h.f32(), D);
      m.logits = Tensor::empty({Tk, V});
      head_.fprop(Tk, m.h.f32(), D, w_.lm_head, m.logits.f32(), V);
      m.targets = shifted_targets(batch_.tokens, B, S, k, &m.n_valid);
      loss_.mtp_ce.push_back(ops::cross_entropy_sum(Tk, V, m.logits.f32(), V, m.targets.data()) / double(m.n_valid));
      prev = &m.h;
      n_prev = n;
    }
  }

  double mtp_mean = 0.0;
  for (double v : loss_.mtp_ce) mtp_mean += v;
  if (!loss_.mtp_ce.empty()) mtp_mean /= double(loss_.mtp_ce.size());
  loss_.total = loss_.main_ce + opt.mtp_lambda * mtp_mean + loss_.balance;
  have_forward_ = true;
  return loss_;
}

void TrainModel::backward(ModelWeights& G) {
  const ModelConfig& c = w_.cfg;
  DSV3_CHECK(have_forward_, "TrainModel::backward: no forward to differentiate (one backward per forward)");
  DSV3_CHECK(G.layers.size() == w_.layers.size(), "TrainModel::backward: gradient layout does not match the weights");
  const int64_t B = batch_.B, S = batch_.S, D = c.hidden_size, V = c.vocab_size, T = B * S;
  const float eps = float(c.rms_norm_eps);

  // MTP depths, deepest first; dh_next carries dL/dh^k from depth k+1 into depth k.
  std::optional<ProfileScope> prof;
  prof.emplace("model.bwd.mtp");
  Tensor dh_next;
  if (opt_.mtp_lambda != 0.0) {
    for (int64_t k = int64_t(mtp_.size()); k >= 1; --k) {
      Mtp& m = mtp_[k - 1];
      const int64_t n = m.n, Tk = B * n;
      LayerWeights& Gl = G.layers[layer_pos(w_, m.W->index)];
      const float scale = float(opt_.mtp_lambda / double(mtp_.size()) / double(m.n_valid));
      Tensor dlog = Tensor::empty({Tk, V});
      ops::cross_entropy_backward(Tk, V, m.logits.f32(), V, m.targets.data(), scale, dlog.f32(), V);
      Tensor dh = Tensor::empty({Tk, D});
      head_.dgrad(Tk, dlog.f32(), V, w_.lm_head, dh.f32(), D);
      if (dh_next.defined())
        for (int64_t i = 0; i < Tk * D; ++i) dh.f32()[i] += dh_next.f32()[i];
      head_.wgrad(Tk, dlog.f32(), V, m.h.f32(), D, G.lm_head);
      Tensor dx = Tensor::empty({Tk, D});
      ops::rmsnorm_backward_input(Tk, D, m.x_out.f32(), D, m.W->head_norm.f32(), dh.f32(), D, eps, dx.f32(), D, false);
      ops::rmsnorm_backward_weight(Tk, D, m.x_out.f32(), D, dh.f32(), D, eps, Gl.head_norm.f32());
      Tensor du = layer_backward_input(m.ctx, *m.W, m.layer, dx);
      layer_backward_weight(m.ctx, *m.W, m.layer, Gl);
      // eh_proj, enorm, hnorm.
      Tensor dcat = Tensor::empty({Tk, 2 * D});
      lin_.dgrad(Tk, du.f32(), D, m.W->eh_proj, dcat.f32(), 2 * D);
      lin_.wgrad(Tk, du.f32(), D, m.cat.f32(), 2 * D, Gl.eh_proj);
      Tensor de = Tensor::empty({Tk, D}), dhp = Tensor::empty({Tk, D});
      ops::rmsnorm_backward_input(Tk, D, m.e.f32(), D, m.W->enorm.f32(), dcat.f32(), 2 * D, eps, de.f32(), D, false);
      ops::rmsnorm_backward_weight(Tk, D, m.e.f32(), D, dcat.f32(), 2 * D, eps, Gl.enorm.f32());
      ops::rmsnorm_backward_input(Tk, D, m.hp.f32(), D, m.W->hnorm.f32(), dcat.f32() + D, 2 * D, eps, dhp.f32(), D,
                                  false);
      ops::rmsnorm_backward_weight(Tk, D, m.hp.f32(), D, dcat.f32() + D, 2 * D, eps, Gl.hnorm.f32());
      std::vector<int32_t> ids(static_cast<size_t>(Tk));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n; ++i) ids[b * n + i] = batch_.tokens[b * S + i + k];
      scatter_embeddings(G, ids.data(), Tk, de.f32());
      // dL/dh^{k−1}: rows i < n of each sequence of the previous depth (n + 1 rows per sequence; S for k = 1).
      const int64_t n_prev = n + 1;
      dh_next = Tensor::zeros({B * n_prev, D});
      for (int64_t b = 0; b < B; ++b)
        std::memcpy(dh_next.f32() + b * n_prev * D, dhp.f32() + b * n * D, size_t(n * D) * 4);
    }
  }

  // Main model.
  prof.emplace("model.bwd.head+ce");
  Tensor dlog = Tensor::empty({T, V});
  ops::cross_entropy_backward(T, V, logits_.f32(), V, targets_.data(), float(1.0 / double(n_valid_)), dlog.f32(), V);
  Tensor dh = Tensor::empty({T, D});
  head_.dgrad(T, dlog.f32(), V, w_.lm_head, dh.f32(), D);
  if (dh_next.defined())
    for (int64_t i = 0; i < T * D; ++i) dh.f32()[i] += dh_next.f32()[i];
  head_.wgrad(T, dlog.f32(), V, h_.f32(), D, G.lm_head);
  Tensor dx = Tensor::empty({T, D});
  ops::rmsnorm_backward_input(T, D, x_last_.f32(), D, w_.final_norm.f32(), dh.f32(), D, eps, dx.f32(), D, false);
  ops::rmsnorm_backward_weight(T, D, x_last_.f32(), D, dh.f32(), D, eps, G.final_norm.f32());
  prof.reset();
  for (int64_t l = int64_t(main_.size()) - 1; l >= 0; --l) {
    LayerWeights& Gl = G.layers[layer_pos(w_, main_[l]->index)];
    dx = layer_backward_input(*ctx_main_, *main_[l], states_[l], dx);
    layer_backward_weight(*ctx_main_, *main_[l], states_[l], Gl);
  }
  scatter_embeddings(G, batch_.tokens.data(), T, dx.f32());
  have_forward_ = false;
}

}  // namespace dsv3::train
