// `dsv3 serve`: the OpenAI-compatible HTTP server (src/server/server.h) over one continuous-batching engine.
//   dsv3 serve --model DIR [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N] [--api-key K] ...
// Prints the URL and a curl example once listening. SIGINT / SIGTERM: stop taking generations, let in-flight
// ones finish for --shutdown-grace seconds (then cancel them), stop the listener, exit 0.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "dsv3/error.h"
#include "infer_options.h"
#include "server/server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsv3::cli {

namespace {

namespace fs = std::filesystem;

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

void register_serve(CLI::App& root) {
  struct Opts {
    std::string model, host = "127.0.0.1", api_key, served_name, tokenizer;
    int port = 8080, http_threads = 0;
    int64_t parallel = 8, ctx = 0, kv_tokens = 0, max_queue = 256, prefill_chunk = 256;
    size_t max_body_bytes = size_t(8) << 20;
    double shutdown_grace = 10.0;
    InferOptions infer;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = root.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions (stream, n, stop, logprobs, tools, "
      "suffix=FIM), /tokenize, /detokenize; GET /v1/models, /health, /metrics");
  cmd->footer(
      "Every route but /health needs 'Authorization: Bearer KEY' when --api-key (or $DSV3_API_KEY) is set.\n"
      "Errors are OpenAI-shaped JSON: 400 bad JSON/fields, 401 key, 404 model/route, 405 method, 413 body, 429 queue.\n"
      "SIGINT/SIGTERM: finish in-flight requests (up to --shutdown-grace s), then exit 0. See docs/server.md.");
  cmd->add_option("--model", o->model, "model directory (config.json + safetensors + tokenizer.json)")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.json or its directory (default: the model directory)");
  cmd->add_option("--host", o->host, "address to listen on (loopback by default)")->capture_default_str();
  cmd->add_option("--port", o->port, "TCP port (0 = any free port)")->capture_default_str();
  cmd->add_option("--parallel", o->parallel, "sequences decoded concurrently (engine slots)")->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "context length per sequence, prompt + generated (0 = the model's, at most 4096)")
      ->capture_default_str();
  cmd->add_option("--kv-tokens", o->kv_tokens, "KV-cache pool size in tokens (0 = parallel x ctx)")
      ->capture_default_str();
  cmd->add_option("--prefill-chunk", o->prefill_chunk, "prompt tokens per request per engine step")
      ->capture_default_str();
  add_infer_options(cmd, o->infer);
  cmd->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' (default: $DSV3_API_KEY if set)");
  cmd->add_option("--max-queue", o->max_queue, "choices allowed to wait beyond the slots; more get 429")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o->max_body_bytes, "largest request body; larger gets 413")
      ->capture_default_str();
  cmd->add_option("--served-model-name", o->served_name, "model id clients use (default: the model directory's name)");
  cmd->add_option("--http-threads", o->http_threads, "connection threads (0 = 2 x (parallel + 16), at least 32)")
      ->capture_default_str();
  cmd->add_option("--shutdown-grace", o->shutdown_grace, "seconds in-flight requests may finish after SIGINT/SIGTERM")
      ->capture_default_str();
  cmd->callback([o] {
    if (o->api_key.empty())
      if (const char* k = std::getenv("DSV3_API_KEY")) o->api_key = k;
    DSV3_CHECK(fs::exists(fs::path(o->model) / "config.json"), "serve: ", o->model, " has no config.json");
    const std::string tok_path = o->tokenizer.empty() ? o->model : o->tokenizer;
    const fs::path tok_file = fs::is_directory(tok_path) ? fs::path(tok_path) / "tokenizer.json" : fs::path(tok_path);
    DSV3_CHECK(fs::exists(tok_file), "serve: ", tok_file.string(), " not found (the server needs a tokenizer)");
    DSV3_CHECK(o->parallel > 0, "serve: --parallel must be positive, got ", o->parallel);
    DSV3_CHECK(o->ctx >= 0, "serve: --ctx must be >= 0, got ", o->ctx);

    tok::Tokenizer tokenizer = tok::Tokenizer::load(tok_path);
    if (!tokenizer.chat_template().empty() && !tok::is_deepseek_v3_chat_template(tokenizer.chat_template()))
      std::fprintf(stderr, "serve: warning: the tokenizer's chat_template is not DeepSeek-V3's; chat requests are "
                           "rendered with the DeepSeek-V3 template anyway\n");
    infer::InferWeights w = load_infer_weights(o->model, o->infer);

    infer::EngineConfig ec;
    ec.max_slots = o->parallel;
    ec.max_seq_len = o->ctx > 0 ? o->ctx : std::min<int64_t>(w.cfg.max_position_embeddings, 4096);
    ec.kv_token_budget = o->kv_tokens;
    ec.prefill_chunk = o->prefill_chunk;
    ec.max_step_tokens = std::max<int64_t>(512, o->parallel);
    ec.kv_dtype = kv_dtype(o->infer, w);

    server::ServerConfig sc;
    sc.host = o->host;
    sc.port = o->port;
    sc.api_key = o->api_key;
    sc.model_name = o->served_name.empty() ? fs::absolute(o->model).lexically_normal().filename().string()
                                           : o->served_name;
    if (sc.model_name.empty()) sc.model_name = fs::absolute(o->model).lexically_normal().parent_path().filename();
    sc.max_queue = o->max_queue;
    sc.max_body_bytes = o->max_body_bytes;
    sc.http_threads = o->http_threads;
    sc.shutdown_grace_s = o->shutdown_grace;

    // Signals are taken by one thread (sigwait), so every other thread (engine, HTTP pool) starts with them blocked.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR1);  // run() returned on its own: wake the signal thread
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    signal(SIGPIPE, SIG_IGN);

    server::Server srv(w, tokenizer, ec, sc);
    const int port = srv.bind();
    if (!is_loopback(sc.host) && sc.api_key.empty())
      std::fprintf(stderr, "serve: warning: listening on %s without --api-key: anyone who can reach it may use it\n",
                   sc.host.c_str());
    const std::string url = "http://" + (sc.host.find(':') != std::string::npos ? "[" + sc.host + "]" : sc.host) +
                            ":" + std::to_string(port);
    std::printf("dsv3 serve: model '%s' (%lld layers, vocab %lld), %lld slots, context %lld, KV pool %lld tokens\n",
                sc.model_name.c_str(), (long long)w.cfg.num_hidden_layers, (long long)w.cfg.vocab_size,
                (long long)ec.max_slots, (long long)srv.api().context_length,
                (long long)srv.engine().kv_config().token_capacity());
    std::printf("%s\n", describe_runtime(w, srv.engine().kv_config()).c_str());
    std::printf("listening on %s\n", url.c_str());
    std::printf("try: curl %s/v1/chat/completions -H 'Content-Type: application/json'%s -d "
                "'{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":32}'\n",
                url.c_str(), sc.api_key.empty() ? "" : " -H \"Authorization: Bearer $DSV3_API_KEY\"",
                sc.model_name.c_str());
    std::fflush(stdout);

    std::thread signal_thread([&srv, &sigs] {
      int sig = 0;
      sigwait(&sigs, &sig);
      if (sig == SIGUSR1) return;
      std::fprintf(stderr, "serve: %s received: finishing in-flight requests, then exiting\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      srv.shutdown();
    });
    srv.run();
    kill(getpid(), SIGUSR1);  // no-op for the signal thread if it already returned
    signal_thread.join();
    std::fprintf(stderr, "serve: stopped\n");
  });
}

}  // namespace

DSV3_REGISTER_COMMAND(register_serve);

}  // namespace dsv3::cli
