// The continuous-batching engine (infer/engine.h): greedy output equals greedy decoding of the full-forward
// reference; outputs (tokens and logprobs) are bitwise the same for a request run alone, batched with
// others, queued behind a slot limit, preempted and recomputed, or served from the prefix cache; cancel,
// stop tokens, max_tokens and the context limit; submit-time validation; the threaded mode; stop strings.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "dsv3/error.h"
#include "infer/engine.h"
#include "infer/latent_attention.h"
#include "infer_test_util.h"

using namespace dsv3;
using namespace dsv3::infer;

namespace {

struct Result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  FinishReason reason = FinishReason::kNone;
  int64_t cached_prompt = 0;
  bool stop_token = false;
};

// Runs the requests through one engine (synchronous steps) and returns their results in request order.
std::vector<Result> run(const ModelWeights& w, const EngineConfig& cfg, const std::vector<GenerationRequest>& reqs,
                        EngineStats* stats = nullptr) {
  Engine eng(w, cfg);
  std::vector<Result> out(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i)
    eng.submit(reqs[i], [&out, i](const TokenEvent& ev) {
      if (ev.token >= 0) {
        out[i].tokens.push_back(ev.token);
        out[i].logprobs.push_back(ev.logprob);
      }
      if (ev.finished) {
        out[i].reason = ev.reason;
        out[i].cached_prompt = ev.cached_prompt_tokens;
        out[i].stop_token = ev.is_stop_token;
      }
    });
  eng.run_until_idle();
  if (stats) *stats = eng.stats();
  return out;
}

GenerationRequest make_req(const ModelConfig& c, int64_t prompt_len, uint64_t seed, int64_t max_tokens,
                           float temperature) {
  GenerationRequest r;
  r.prompt = test::random_tokens(prompt_len, c.vocab_size, 500 + seed);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  r.sampling.top_p = 0.9f;
  r.sampling.logprobs = true;
  return r;
}

void expect_same(const Result& a, const Result& b, const std::string& what) {
  EXPECT_EQ(a.tokens, b.tokens) << what;
  ASSERT_EQ(a.logprobs.size(), b.logprobs.size()) << what;
  for (size_t i = 0; i < a.logprobs.size(); ++i)
    EXPECT_EQ(0, std::memcmp(&a.logprobs[i], &b.logprobs[i], 4)) << what << " token " << i;
  EXPECT_EQ(a.reason, b.reason) << what;
}

}  // namespace

TEST(Engine, GreedyMatchesFullForwardGreedy) {
  const ModelWeights& w = test::random_model("tiny");
  GenerationRequest r = make_req(w.cfg, 12, 1, 20, 0.0f);
  EngineConfig cfg;
  cfg.max_slots = 2, cfg.max_seq_len = 64, cfg.max_step_tokens = 16;
  const Result got = run(w, cfg, {r})[0];
  ASSERT_EQ(got.tokens.size(), 20u);
  EXPECT_EQ(got.reason, FinishReason::kLength);
  std::vector<int32_t> seq = r.prompt;
  for (int i = 0; i < 20; ++i) {
    Tensor lg = test::reference_logits(w, seq);
    const float* last = lg.f32() + (lg.dim(0) - 1) * lg.dim(1);
    seq.push_back(int32_t(std::max_element(last, last + lg.dim(1)) - last));
  }
  EXPECT_EQ(got.tokens, std::vector<int32_t>(seq.begin() + 12, seq.end()));
}

namespace {
// Alone vs batched vs 2 slots vs preempted: identical tokens and logprob bits, with F32 or BF16 latent attention
// (EngineConfig::kv_dtype BF16).
void check_batching_invariance(bool bf16_attention) {
  const ModelWeights& w = test::random_model("tiny_noqlora");
  const ModelConfig& c = w.cfg;
  std::vector<GenerationRequest> reqs;
  const int64_t lens[] = {5, 37, 18, 60, 9};
  for (int i = 0; i < 5; ++i) reqs.push_back(make_req(c, lens[i], uint64_t(i), 14 + i, i == 2 ? 0.0f : 0.8f));
  reqs[3].sampling.top_k = 5;
  reqs[4].sampling.presence_penalty = 0.5f;
  reqs[4].sampling.repetition_penalty = 1.3f;

  EngineConfig base;
  base.max_seq_len = 128, base.max_step_tokens = 64, base.prefill_chunk = 24, base.block_size = 8;
  base.kv_dtype = bf16_attention ? DType::BF16 : DType::F32;
  std::vector<Result> alone;
  for (const auto& r : reqs) {
    EngineConfig one = base;
    one.max_slots = 1;
    alone.push_back(run(w, one, {r})[0]);
  }
  EngineConfig all = base;
  all.max_slots = 5;
  EngineStats st;
  const auto batched = run(w, all, reqs, &st);
  EngineConfig queued = base;
  queued.max_slots = 2;
  const auto limited = run(w, queued, reqs);
  // A pool of 16 blocks × 8 tokens for 5 requests of up to 78 tokens: preemption is unavoidable.
  EngineConfig tight = all;
  tight.kv_token_budget = 128;
  EngineStats tight_st;
  const auto preempted = run(w, tight, reqs, &tight_st);
  EXPECT_GT(tight_st.preemptions, 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(alone[i].tokens.size(), size_t(reqs[i].max_tokens));
    expect_same(alone[i], batched[i], "batched " + std::to_string(i));
    expect_same(alone[i], limited[i], "2 slots " + std::to_string(i));
    expect_same(alone[i], preempted[i], "preempted " + std::to_string(i));
  }
  EXPECT_EQ(st.generated_tokens, 14 + 15 + 16 + 17 + 18);
}

}  // namespace

TEST(Engine, BatchingQueueingAndPreemptionDoNotChangeOutputs) { check_batching_invariance(false); }

TEST(Engine, Bf16AttentionBatchingQueueingAndPreemptionDoNotChangeOutputs) {
  if (!latent_attention_bf16_available()) GTEST_SKIP() << "no AVX512-BF16 in this build";
  check_batching_invariance(true);
}

// --kv-cache names: auto follows the weights (F32 weights keep the F32 cache, BF16/FP8 weights get BF16 rows),
// explicit names win, anything else is an error; the engine's cache then holds rows of that type.
TEST(Engine, KvCacheTypeFollowsTheWeightsUnlessNamed) {
  const ModelWeights& w = test::random_model("tiny");
  const InferWeights f32 = InferWeights::from(w, DType::F32), bf16 = InferWeights::from(w, DType::BF16);
  EXPECT_EQ(kv_cache_dtype("auto", f32), DType::F32);
  EXPECT_EQ(kv_cache_dtype("f32", bf16), DType::F32);
  EXPECT_THROW(kv_cache_dtype("fp8", bf16), Error);
  EXPECT_THROW(kv_cache_dtype("", bf16), Error);
  if (!latent_attention_bf16_available()) {
    EXPECT_EQ(kv_cache_dtype("auto", bf16), DType::F32);
    EXPECT_THROW(kv_cache_dtype("bf16", bf16), Error);
    return;
  }
  EXPECT_EQ(kv_cache_dtype("auto", bf16), DType::BF16);
  EXPECT_EQ(kv_cache_dtype("auto", InferWeights::from(w, DType::F8_E4M3)), DType::BF16);
  EXPECT_EQ(kv_cache_dtype("bf16", f32), DType::BF16);
  EngineConfig ec;
  ec.max_seq_len = 64, ec.kv_dtype = DType::BF16;
  Engine e(bf16, ec);
  EXPECT_TRUE(e.kv_config().dtype == DType::BF16);
  EXPECT_EQ(e.kv_config().bytes_per_token(), e.kv_config().stored_elems() * 2 * w.cfg.num_hidden_layers);
  ec.kv_dtype = DType::F16;
  EXPECT_THROW(Engine(bf16, ec), Error);
}

TEST(Engine, PrefixCacheReusesBlocksWithIdenticalOutputs) {
  const ModelWeights& w = test::random_model("tiny");
  GenerationRequest a = make_req(w.cfg, 45, 3, 8, 0.7f);
  GenerationRequest b = a;
  b.prompt.resize(40);
  for (int i = 0; i < 6; ++i) b.prompt.push_back(int32_t(i + 10));
  b.sampling.seed = 77;
  EngineConfig cfg;
  cfg.max_slots = 1, cfg.max_seq_len = 128, cfg.max_step_tokens = 64, cfg.block_size = 8;
  const auto with = run(w, cfg, {a, b, a});
  cfg.prefix_cache = false;
  const auto without = run(w, cfg, {a, b, a});
  EXPECT_EQ(with[0].cached_prompt, 0);
  EXPECT_EQ(with[1].cached_prompt, 40);  // 5 full blocks shared
  EXPECT_EQ(with[2].cached_prompt, 40);  // all but the last token's block (44 = last index → blocks 0..4)
  EXPECT_EQ(without[1].cached_prompt, 0);
  for (int i = 0; i < 3; ++i) expect_same(with[size_t(i)], without[size_t(i)], "prefix " + std::to_string(i));
}

TEST(Engine, StopTokenLengthAndContextLimit) {
  const ModelWeights& w = test::random_model("tiny");
  EngineConfig cfg;
  cfg.max_slots = 2, cfg.max_seq_len = 20, cfg.max_step_tokens = 32;
  GenerationRequest r = make_req(w.cfg, 15, 4, 100, 0.0f);
  const Result ctx = run(w, cfg, {r})[0];
  EXPECT_EQ(ctx.reason, FinishReason::kLength);
  EXPECT_EQ(ctx.tokens.size(), 5u);  // 15 + 5 = context limit
  // Stop on the third greedy token.
  GenerationRequest s = r;
  s.stop_token_ids = {ctx.tokens[2]};
  const Result stopped = run(w, cfg, {s})[0];
  EXPECT_EQ(stopped.reason, FinishReason::kStop);
  EXPECT_TRUE(stopped.stop_token);
  const size_t first = size_t(std::find(ctx.tokens.begin(), ctx.tokens.end(), ctx.tokens[2]) - ctx.tokens.begin());
  EXPECT_EQ(stopped.tokens.size(), first + 1);
  // EOS stops unless ignore_eos.
  GenerationRequest e = r;
  e.ignore_eos = false;
  ModelWeights w2 = w;  // same weights, eos = the first greedy token
  w2.cfg.eos_token_id = ctx.tokens[0];
  const Result eos = run(w2, cfg, {e})[0];
  EXPECT_EQ(eos.reason, FinishReason::kStop);
  EXPECT_EQ(eos.tokens.size(), 1u);
}

TEST(Engine, CancelReleasesTheRequest) {
  const ModelWeights& w = test::random_model("tiny");
  EngineConfig cfg;
  cfg.max_slots = 2, cfg.max_seq_len = 256, cfg.max_step_tokens = 32;
  Engine eng(w, cfg);
  std::vector<TokenEvent> events;
  GenerationRequest r = make_req(w.cfg, 10, 5, 1000, 1.0f);
  const uint64_t id = eng.submit(r, [&](const TokenEvent& ev) { events.push_back(ev); });
  for (int i = 0; i < 4; ++i) eng.step();
  EXPECT_EQ(events.size(), 4u);
  eng.cancel(id);
  eng.step();
  ASSERT_EQ(events.size(), 5u);
  EXPECT_TRUE(events.back().finished);
  EXPECT_EQ(events.back().reason, FinishReason::kCancelled);
  EXPECT_TRUE(eng.idle());
  EXPECT_FALSE(eng.step());
  eng.cancel(id);  // unknown now: no-op
  EXPECT_FALSE(eng.step());
  EXPECT_EQ(finish_reason_name(FinishReason::kCancelled), "cancelled");
}

TEST(Engine, SubmitValidates) {
  const ModelWeights& w = test::random_model("tiny");
  EngineConfig cfg;
  cfg.max_slots = 1, cfg.max_seq_len = 16, cfg.max_step_tokens = 16;
  Engine eng(w, cfg);
  auto cb = [](const TokenEvent&) {};
  GenerationRequest r;
  EXPECT_THROW(eng.submit(r, cb), Error);  // empty
  r.prompt = {1, 2, int32_t(w.cfg.vocab_size)};
  EXPECT_THROW(eng.submit(r, cb), Error);  // id outside vocab
  r.prompt.assign(16, 3);
  EXPECT_THROW(eng.submit(r, cb), Error);  // no room in the context
  r.prompt = {1, 2};
  r.sampling.top_p = 0;
  EXPECT_THROW(eng.submit(r, cb), Error);
  r.sampling.top_p = 1;
  r.max_tokens = 0;
  EXPECT_THROW(eng.submit(r, cb), Error);
  r.max_tokens = 3;
  EXPECT_NO_THROW(eng.submit(r, cb));
  eng.run_until_idle();
  EngineConfig bad = cfg;
  bad.max_step_tokens = 0;
  EXPECT_THROW(Engine(w, bad), Error);
}

TEST(Engine, ThreadedModeMatchesSynchronous) {
  const ModelWeights& w = test::random_model("tiny");
  EngineConfig cfg;
  cfg.max_slots = 3, cfg.max_seq_len = 128, cfg.max_step_tokens = 48, cfg.block_size = 8;
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back(make_req(w.cfg, 7 + 5 * i, uint64_t(i), 10, 0.9f));
  const auto sync = run(w, cfg, reqs);

  Engine eng(w, cfg);
  eng.start();
  std::vector<std::promise<Result>> done(reqs.size());
  std::vector<Result> partial(reqs.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < reqs.size(); ++i)
    clients.emplace_back([&, i] {
      eng.submit(reqs[i], [&, i](const TokenEvent& ev) {
        if (ev.token >= 0) partial[i].tokens.push_back(ev.token), partial[i].logprobs.push_back(ev.logprob);
        if (ev.finished) {
          partial[i].reason = ev.reason;
          done[i].set_value(partial[i]);
        }
      });
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) expect_same(sync[i], done[i].get_future().get(), "threaded " + std::to_string(i));
  eng.stop();
  EXPECT_TRUE(eng.idle());
}

TEST(StopStringMatcher, HoldsBackPrefixesAndCutsAtTheStop) {
  StopStringMatcher m({"</s>", "STOP"});
  EXPECT_EQ(m.push("Hello "), "Hello ");
  EXPECT_EQ(m.push("wor"), "wor");
  EXPECT_EQ(m.push("ld <"), "ld ");  // "<" may start "</s>"
  EXPECT_EQ(m.push("/"), "");
  EXPECT_EQ(m.push("x"), "</x");  // not a stop after all
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.push("abcST"), "abc");
  EXPECT_EQ(m.push("OP and more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "STOP");
  EXPECT_EQ(m.push("later"), "");
  EXPECT_EQ(m.flush(), "");
  StopStringMatcher n({"\n\n"});
  EXPECT_EQ(n.push("a\n"), "a");
  EXPECT_EQ(n.flush(), "\n");
  StopStringMatcher first({"bc", "abcd"});
  EXPECT_EQ(first.push("xabcd"), "x");  // the earliest match wins
  EXPECT_EQ(first.matched(), "abcd");
}

// `dsv3 generate --prompt-ids` streams the same ids as the engine (greedy, tiny model saved to disk).
TEST(Engine, CliGenerateMatchesEngine) {
  const ModelWeights& w = test::random_model("tiny");
  const std::string dir = std::string(DSV3_BINARY_DIR) + "/infer_cli_generate";
  w.save(dir + "/model", DType::F32);
  const std::string out = dir + "/out.txt";
  const std::string cmd = std::string(DSV3_BINARY_DIR) + "/dsv3 generate --model " + dir +
                          "/model --prompt-ids 3,1,4,1,5,9 --max-tokens 7 --temperature 0 --ignore-eos > " + out +
                          " 2> " + dir + "/err.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream f(out);
  std::string line;
  std::getline(f, line);
  GenerationRequest r;
  r.prompt = {3, 1, 4, 1, 5, 9};
  r.max_tokens = 7;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  EngineConfig cfg;
  cfg.max_slots = 1, cfg.max_seq_len = 13, cfg.max_step_tokens = 16;
  const Result res = run(w, cfg, {r})[0];
  std::string want;
  for (size_t i = 0; i < res.tokens.size(); ++i) want += (i ? "," : "") + std::to_string(res.tokens[i]);
  EXPECT_EQ(line, want);
}
