// The training loop, resume and the data-source factory (see trainer.h).
#include "train/trainer.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>

#include "dsv3/error.h"
#include "io/atomic_file.h"
#include "model/plan.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "train/checkpoint.h"
#include "train/profile.h"
#include "train/synthetic_source.h"

#if __has_include("data/shard_loader.h")
#include "data/shard_loader.h"
#define DSV3_HAVE_SHARD_LOADER 1
#endif

namespace dsv3::train {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::unique_ptr<BatchSource> make_batch_source(const RunConfig& cfg, const ModelConfig& model, const std::string& split) {
  if (cfg.data == "synthetic") return std::make_unique<SyntheticSource>(model.vocab_size, cfg.data_seed, split);
#ifdef DSV3_HAVE_SHARD_LOADER
  data::ShardSourceOptions o;
  o.tokenizer_path = cfg.tokenizer;  // refuse data tokenized with another tokenizer than the run names
  return data::open_batch_source(cfg.data, split, cfg.data_seed, o);
#else
  (void)model;
  DSV3_FAIL("data \"", cfg.data, "\": this build reads only \"synthetic\" data (src/data/shard_loader.h is missing)");
#endif
}

namespace {

// The architecture-relevant fields that differ between two model configs, as "field: a vs b" lines.
std::string config_diff(const ModelConfig& a, const ModelConfig& b) {
  json ja = a.to_json(), jb = b.to_json();
  for (const char* k : {"torch_dtype", "quantization_config", "transformers_version", "architectures", "use_cache",
                        "initializer_range", "_name_or_path", "auto_map", "model_type"}) {
    ja.erase(k);
    jb.erase(k);
  }
  std::set<std::string> keys;
  for (const auto& [k, v] : ja.items()) keys.insert(k);
  for (const auto& [k, v] : jb.items()) keys.insert(k);
  std::string out;
  for (const std::string& k : keys) {
    const json va = ja.contains(k) ? ja[k] : json(), vb = jb.contains(k) ? jb[k] : json();
    if (va != vb) out += (out.empty() ? "" : ", ") + k + ": " + va.dump() + " (run) vs " + vb.dump() + " (checkpoint)";
  }
  return out;
}

void copy_values(ModelWeights& dst, const ModelWeights& src) {
  for (auto& [name, t] : dst.by_name) {
    auto it = src.by_name.find(name);
    DSV3_CHECK(it != src.by_name.end() && it->second.shape == t.shape && it->second.dtype == t.dtype,
               "checkpoint tensor ", name, " is missing or misshaped");
    std::memcpy(t.data, it->second.data, t.nbytes());
  }
}

bool all_finite(const LossValues& l) {
  if (!std::isfinite(l.total) || !std::isfinite(l.main_ce) || !std::isfinite(l.balance)) return false;
  for (double v : l.mtp_ce)
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

Trainer::Trainer(const RunConfig& cfg, const TrainerOptions& opt)
    : cfg_(cfg), topt_(opt), loss_window_(cfg.spike.window), maxvio_window_(cfg.maxvio_window) {
  cfg_.validate();
  mcfg_ = resolve_model_config(cfg_.model, topt_.config_dir);
  DSV3_CHECK(cfg_.seq >= mcfg_.num_nextn_predict_layers + 2, "seq ", cfg_.seq, " is too short for ",
             mcfg_.num_nextn_predict_layers, " MTP depth(s) (need >= depth + 2)");
  std::string ckpt;
  if (!topt_.resume.empty()) {
    ckpt = resolve_checkpoint(topt_.resume);
    LoadedCheckpoint ck = read_checkpoint(ckpt);
    const std::string diff = config_diff(mcfg_, ck.weights.cfg);
    DSV3_CHECK(diff.empty(), "resume: checkpoint '", ckpt, "' was trained with a different model config than \"",
               cfg_.model, "\": ", diff);
    weights_ = std::move(ck.weights);
  } else {
    const std::vector<std::string> existing = list_checkpoints(cfg_.out);
    DSV3_CHECK(existing.empty(), "run directory '", cfg_.out, "' already has checkpoints (newest ", existing.back(),
               "); pass --resume to continue it or choose another --out");
    weights_ = is_model_dir(cfg_.model) ? ModelWeights::load(cfg_.model)
                                        : ModelWeights::random(mcfg_, cfg_.init_seed, float(cfg_.init_std));
  }
  grad_ = zero_gradients(weights_);
  model_ = std::make_unique<TrainModel>(weights_, parse_precision(cfg_.precision), cfg_.fp8_cache_activations);
  AdamWOptions ao;
  ao.beta1 = cfg_.adam_beta1, ao.beta2 = cfg_.adam_beta2, ao.eps = cfg_.adam_eps, ao.weight_decay = cfg_.weight_decay;
  ao.bf16_moments = cfg_.moments == "bf16";
  opt_ = std::make_unique<AdamW>(weights_, ao);
  train_src_ = make_batch_source(cfg_, mcfg_, "train");
  if (!ckpt.empty()) restore_from_checkpoint(ckpt, /*restore_data=*/true);

  fs::create_directories(cfg_.out);
  io::atomic_write_file((fs::path(cfg_.out) / "run_config.json").string(), cfg_.to_json().dump(2) + "\n");
  log_ = std::make_unique<MetricsLog>((fs::path(cfg_.out) / "metrics.jsonl").string(), ckpt.empty() ? -1 : step_);
  flops_per_token_ = make_plan(mcfg_, cfg_.seq).flops_per_token_train;
  batch_.B = cfg_.batch, batch_.S = cfg_.seq;
  batch_.tokens.resize(size_t(cfg_.batch * cfg_.seq));
  if (!topt_.quiet) {
    std::printf("resolved run config:\n%s\n", cfg_.to_json().dump(2).c_str());
    std::printf("model: %s (%lld layers + %lld MTP, vocab %lld), %.3g train GFLOP/token at S=%lld\n",
                cfg_.model.c_str(), (long long)mcfg_.num_hidden_layers, (long long)mcfg_.num_nextn_predict_layers,
                (long long)mcfg_.vocab_size, flops_per_token_ / 1e9, (long long)cfg_.seq);
    if (!ckpt.empty()) std::printf("resumed from %s at step %lld\n", ckpt.c_str(), (long long)step_);
    std::fflush(stdout);
  }
  if (!ckpt.empty()) log_event("resume", ckpt);
}

Trainer::~Trainer() = default;

void Trainer::restore_from_checkpoint(const std::string& dir, bool restore_data) {
  LoadedCheckpoint ck = read_checkpoint(dir);
  const json& st = ck.trainer_state;
  copy_values(weights_, ck.weights);
  const int64_t adam_steps = st.at("adam_steps").get<int64_t>();
  opt_->load_state(ck.optimizer, adam_steps);
  step_ = st.at("step").get<int64_t>();
  tokens_ = st.at("tokens").get<double>();
  loss_window_.from_json(st.at("loss_window"));
  maxvio_window_.from_json(st.at("maxvio_window"));
  if (restore_data) {
    const std::string fp = st.at("data_fingerprint").get<std::string>();
    DSV3_CHECK(fp == train_src_->fingerprint(), "resume: checkpoint '", dir, "' was trained on data \"", fp,
               "\" but this run reads \"", train_src_->fingerprint(), "\"");
    train_src_->restore(st.at("data_state"));
    rollbacks_ = st.value("rollbacks", int64_t(0));
  }
  last_checkpoint_step_ = step_;
}

json Trainer::trainer_state() const {
  return {{"step", step_},
          {"tokens", tokens_},
          {"adam_steps", opt_->steps_taken()},
          {"rng", {{"init_seed", cfg_.init_seed}, {"data_seed", cfg_.data_seed}, {"draws", 0}}},
          {"data_state", train_src_->state()},
          {"data_fingerprint", train_src_->fingerprint()},
          {"loss_window", loss_window_.to_json()},
          {"maxvio_window", maxvio_window_.to_json()},
          {"rollbacks", rollbacks_},
          {"run_config", cfg_.to_json()},
          {"model_config", mcfg_.to_json()}};
}

void Trainer::log_event(const std::string& event, const std::string& detail) {
  log_->write({{"type", "event"}, {"step", step_}, {"event", event}, {"detail", detail}});
  if (!topt_.quiet) {
    std::printf("[%s] step %lld: %s\n", event.c_str(), (long long)step_, detail.c_str());
    std::fflush(stdout);
  }
}

StepRecord Trainer::step() {
  const auto t0 = Clock::now();
  const int64_t s = step_;
  StepRecord rec;
  rec.lr = cfg_.lr.at(s, tokens_, cfg_.steps);
  LossOptions lo;
  lo.mtp_lambda = cfg_.mtp_lambda.at(s, tokens_);
  lo.balance_alpha = cfg_.balance_alpha;
  const float gamma = float(cfg_.bias_gamma.at(s, tokens_));

  for (auto& [name, g] : grad_.by_name) std::memset(g.data, 0, g.nbytes());
  std::vector<ExpertLoad> loads;
  LossValues sum;
  const int64_t n_micro = cfg_.grad_accum;
  for (int64_t m = 0; m < n_micro; ++m) {
    train_src_->next(cfg_.batch, cfg_.seq, batch_.tokens);
    LossValues l;
    {
      ProfileScope p("forward");
      l = model_->forward(batch_, lo);
    }
    {
      ProfileScope p("backward");
      model_->backward(grad_);
    }
    sum.total += l.total, sum.main_ce += l.main_ce, sum.balance += l.balance;
    sum.mtp_ce.resize(l.mtp_ce.size(), 0.0);
    for (size_t k = 0; k < l.mtp_ce.size(); ++k) sum.mtp_ce[k] += l.mtp_ce[k];
    std::vector<ExpertLoad> el = model_->expert_load();
    if (loads.empty()) {
      loads = std::move(el);
    } else {
      for (size_t i = 0; i < loads.size(); ++i)
        for (size_t e = 0; e < loads[i].count.size(); ++e) loads[i].count[e] += el[i].count[e];
    }
  }
  const double inv = 1.0 / double(n_micro);
  rec.loss.total = sum.total * inv, rec.loss.main_ce = sum.main_ce * inv, rec.loss.balance = sum.balance * inv;
  for (double v : sum.mtp_ce) rec.loss.mtp_ce.push_back(v * inv);
  if (n_micro > 1) {
    const float fi = float(inv);
    for (auto& [name, g] : grad_.by_name) {
      float* p = g.f32();
      for (int64_t i = 0, n = g.numel(); i < n; ++i) p[i] *= fi;
    }
  }
  rec.grad_norm = global_grad_norm(grad_);
  tokens_ += double(cfg_.batch * cfg_.seq * n_micro);

  double guard_loss = rec.loss.total;
  if (topt_.test_loss_override) guard_loss = topt_.test_loss_override(s, guard_loss);
  const bool finite = all_finite(rec.loss) && std::isfinite(guard_loss) && std::isfinite(rec.grad_norm);
  const bool spike = finite && cfg_.spike.factor > 0 && loss_window_.size() >= cfg_.spike.min_steps &&
                     guard_loss > cfg_.spike.factor * loss_window_.median();

  char detail[256];
  if (!finite) {
    ++step_;
    rec.skipped = true;
    std::snprintf(detail, sizeof detail, "non-finite loss %g or grad norm %g: step skipped, weights unchanged",
                  guard_loss, rec.grad_norm);
    log_event("skip", detail);
  } else if (spike) {
    std::snprintf(detail, sizeof detail, "loss %.6g > %.3g x running median %.6g", guard_loss, cfg_.spike.factor,
                  loss_window_.median());
    const std::vector<std::string> ckpts = list_checkpoints(cfg_.out);
    if (ckpts.empty()) {
      ++step_;
      rec.skipped = true;
      log_event("skip", std::string(detail) + "; no checkpoint to roll back to: step skipped");
    } else {
      ++rollbacks_;
      DSV3_CHECK(rollbacks_ <= cfg_.spike.max_rollbacks, "loss spike at step ", s + 1, " (", detail, ") after ",
                 cfg_.spike.max_rollbacks, " rollbacks: giving up (raise spike_guard.max_rollbacks or lower lr)");
      const std::string dir = resolve_checkpoint(cfg_.out);
      const int64_t rb = rollbacks_;
      restore_from_checkpoint(dir, /*restore_data=*/false);  // the data cursor stays: bad batches are skipped
      rollbacks_ = rb;
      rec.rolled_back = true;
      log_event("rollback", std::string(detail) + "; restored " + dir + " (data not rewound)");
    }
  } else {
    ProfileScope p("optimizer");
    opt_->step(weights_, grad_, rec.lr, clip_scale(rec.grad_norm, cfg_.clip));
    rec.maxvio = update_router_bias(weights_, loads, gamma);
    maxvio_window_.push(loads);
    loss_window_.push(guard_loss);
    ++step_;
  }
  rec.step = step_;
  rec.maxvio_window = maxvio_window_.window_maxvio();
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  rec.tokens_per_s = double(cfg_.batch * cfg_.seq * n_micro) / std::max(dt, 1e-9);
  rec.mfu = mfu(rec.tokens_per_s, flops_per_token_, cfg_.effective_peak_gflops());
  ++session_steps_;
  if (session_steps_ == 1) t_session_ = t0;

  if (!rec.rolled_back) {
    double maxvio_mean = 0;
    for (double v : rec.maxvio) maxvio_mean += v / double(rec.maxvio.size());
    log_->write({{"type", "step"}, {"step", rec.step}, {"loss", rec.loss.total}, {"main_ce", rec.loss.main_ce},
                 {"mtp_ce", rec.loss.mtp_ce}, {"balance", rec.loss.balance}, {"lr", rec.lr},
                 {"grad_norm", rec.grad_norm}, {"tokens", tokens_}, {"tokens_per_s", rec.tokens_per_s},
                 {"mfu", rec.mfu}, {"maxvio", rec.maxvio}, {"maxvio_mean", maxvio_mean},
                 {"maxvio_window", rec.maxvio_window}, {"lambda", lo.mtp_lambda}, {"gamma", gamma},
                 {"skipped", rec.skipped}});
    if (!topt_.quiet && (rec.step % cfg_.log_every == 0 || rec.step == cfg_.steps)) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - t_session_).count();
      const double eta = elapsed / double(session_steps_) * double(cfg_.steps - step_);
      const double mtp = rec.loss.mtp_ce.empty() ? 0.0 : rec.loss.mtp_ce[0];
      std::printf("step %lld/%lld | loss %.4f | ce %.4f | mtp %.4f | bal %.3e | lr %.3e | gnorm %.3f | "
                  "%.0f tok/s | MFU %.2f%% | maxvio %.3f | ETA %s%s\n",
                  (long long)rec.step, (long long)cfg_.steps, rec.loss.total, rec.loss.main_ce, mtp, rec.loss.balance,
                  rec.lr, rec.grad_norm, rec.tokens_per_s, 100.0 * rec.mfu, rec.maxvio_window,
                  format_duration(eta).c_str(), rec.skipped ? " (skipped)" : "");
      std::fflush(stdout);
    }
  }
  history_.push_back(rec);
  return rec;
}

double Trainer::evaluate() {
  std::unique_ptr<BatchSource> src = make_batch_source(cfg_, mcfg_, "val");
  LossOptions lo;
  lo.mtp_lambda = cfg_.mtp_lambda.at(step_, tokens_);
  lo.balance_alpha = cfg_.balance_alpha;
  TrainBatch b;
  b.B = cfg_.batch, b.S = cfg_.seq;
  double total = 0, ce = 0;
  for (int64_t i = 0; i < cfg_.eval_batches; ++i) {
    src->next(b.B, b.S, b.tokens);
    LossValues l = model_->forward(b, lo);
    total += l.total, ce += l.main_ce;
  }
  total /= double(cfg_.eval_batches), ce /= double(cfg_.eval_batches);
  log_->write({{"type", "eval"}, {"step", step_}, {"val_loss", ce}, {"val_total", total}});
  if (!topt_.quiet) {
    std::printf("eval step %lld | val_loss %.4f | val_total %.4f\n", (long long)step_, ce, total);
    std::fflush(stdout);
  }
  return ce;
}

std::string Trainer::save_checkpoint() {
  CheckpointWriteOptions o;
  o.weights_dtype = cfg_.checkpoint_dtype == "bf16"  ? DType::BF16
                    : cfg_.checkpoint_dtype == "fp8" ? DType::F8_E4M3
                                                     : DType::F32;
  o.tokenizer = cfg_.tokenizer;
  o.keep_last = cfg_.keep_last;
  const std::string dir = write_checkpoint(cfg_.out, step_, weights_, *opt_, trainer_state(), o);
  last_checkpoint_step_ = step_;
  log_event("checkpoint", dir);
  if (cfg_.sample_tokens > 0) write_samples();
  return dir;
}

void Trainer::write_samples() {
  try {
    std::optional<tok::Tokenizer> tk;
    if (!cfg_.tokenizer.empty()) tk = tok::Tokenizer::load(cfg_.tokenizer);
    std::vector<json> prompts = cfg_.sample_prompts;
    if (prompts.empty()) prompts.push_back(json::array({mcfg_.bos_token_id}));
    Transformer tf(weights_);
    std::FILE* f = std::fopen((fs::path(cfg_.out) / "samples.jsonl").c_str(), "ab");
    for (const json& p : prompts) {
      std::vector<int32_t> ids;
      if (p.is_string()) {
        DSV3_CHECK(tk.has_value(), "sample prompt ", p.dump(), " is text but the run names no tokenizer");
        ids = tk->encode(p.get<std::string>(), tk->add_bos_default());
      } else {
        for (const json& t : p) ids.push_back(int32_t(t.get<int64_t>()));
      }
      for (int32_t id : ids)
        DSV3_CHECK(id >= 0 && id < mcfg_.vocab_size, "sample prompt token ", id, " out of range");
      const size_t n_prompt = ids.size();
      for (int64_t t = 0; t < cfg_.sample_tokens; ++t) {
        Tensor logits = tf.logits(tf.hidden(ids));  // [n, V]; greedy on the last row
        const int64_t V = mcfg_.vocab_size;
        const float* row = logits.f32() + (int64_t(ids.size()) - 1) * V;
        int32_t best = 0;
        for (int64_t v = 1; v < V; ++v)
          if (row[v] > row[best]) best = int32_t(v);
        ids.push_back(best);
        if (best == mcfg_.eos_token_id) break;
      }
      std::vector<int32_t> gen(ids.begin() + int64_t(n_prompt), ids.end());
      json line = {{"step", step_}, {"prompt", p}, {"tokens", gen}};
      if (tk) line["text"] = tok::utf8_lossy(tk->decode(gen));  // a greedy sample may end mid-character
      if (f) std::fprintf(f, "%s\n", line.dump().c_str());
      if (!topt_.quiet) std::printf("sample step %lld: %s -> %s\n", (long long)step_, p.dump().c_str(),
                                    tk ? json(line["text"]).dump().c_str() : json(gen).dump().c_str());
    }
    if (f) std::fclose(f);
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "samples at step %lld failed (training continues): %s\n", (long long)step_, e.what());
  }
}

void Trainer::run() {
  double step_seconds = 0;
  int64_t steps_run = 0;
  while (step_ < cfg_.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    StepRecord rec = step();
    step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++steps_run;
    if (rec.rolled_back) continue;
    if (cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0) evaluate();
    if (cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0) save_checkpoint();
  }
  if (last_checkpoint_step_ != step_) save_checkpoint();
  if (profiling_enabled() && !topt_.quiet) std::printf("%s", profile_report(steps_run, step_seconds).c_str());
}

}  // namespace dsv3::train
