// dsv3 grad: one training forward + backward over a batch of token sequences; prints the loss parts as JSON on
// stdout and writes every trainable parameter's gradient (F32, HF names) to a .safetensors file.
// Experts no token was routed to get zero gradients; e_score_correction_bias has no entry (it is not trained).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "dsv3/error.h"
#include "io/safetensors.h"
#include "train/train_model.h"

namespace dsv3::cli {

// "1,2,3;4,5,6" → B sequences of equal length S.
static train::TrainBatch parse_batch(const std::string& spec) {
  train::TrainBatch batch;
  std::stringstream ss(spec);
  std::string seq;
  while (std::getline(ss, seq, ';')) {
    std::vector<int64_t> ids = parse_int_list(seq);
    if (batch.B == 0) batch.S = int64_t(ids.size());
    DSV3_CHECK(int64_t(ids.size()) == batch.S, "--tokens: sequence ", batch.B, " has ", ids.size(),
               " tokens, the first has ", batch.S, " (all sequences must have the same length)");
    for (int64_t v : ids) {
      DSV3_CHECK(v >= 0 && v <= INT32_MAX, "--tokens: token id ", v, " is out of range");
      batch.tokens.push_back(int32_t(v));
    }
    ++batch.B;
  }
  DSV3_CHECK(batch.B > 0, "--tokens: no sequence given");
  return batch;
}

static void register_grad(CLI::App& root) {
  auto* cmd = root.add_subcommand("grad", "Loss and parameter gradients of one batch (training forward + backward)");
  struct Opts {
    std::string model, tokens, out;
    double lambda = 0.3, alpha = 1e-4;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "model directory (config.json + safetensors)")->required();
  cmd->add_option("--tokens", o->tokens, "sequences of equal length: ids separated by ',', sequences by ';'")
      ->required();
  cmd->add_option("--lambda", o->lambda, "MTP loss weight λ")->capture_default_str();
  cmd->add_option("--alpha", o->alpha, "sequence-wise balance loss weight α")->capture_default_str();
  cmd->add_option("--out", o->out, "output .safetensors with every parameter's F32 gradient")->required();
  cmd->callback([o] {
    train::TrainBatch batch = parse_batch(o->tokens);
    ModelWeights w = ModelWeights::load(o->model);
    train::TrainModel model(w);
    train::LossOptions lo;
    lo.mtp_lambda = o->lambda;
    lo.balance_alpha = o->alpha;
    train::LossValues loss = model.forward(batch, lo);
    ModelWeights grad = train::zero_gradients(w);
    model.backward(grad);
    io::write_safetensors(o->out, train::gradient_list(grad), {{"format", "pt"}});
    nlohmann::ordered_json j;  // key order as documented: loss, main_ce, mtp_ce, balance
    j["loss"] = loss.total;
    j["main_ce"] = loss.main_ce;
    j["mtp_ce"] = loss.mtp_ce;
    j["balance"] = loss.balance;
    std::cout << j.dump() << "\n";
    std::fprintf(stderr, "grad: B=%lld S=%lld, %zu gradients -> %s\n", (long long)batch.B, (long long)batch.S,
                 train::gradient_list(grad).size(), o->out.c_str());
  });
}

DSV3_REGISTER_COMMAND(register_grad);

}  // namespace dsv3::cli
