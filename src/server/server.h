// The HTTP server behind `dsv3 serve`: OpenAI-compatible routes over one continuous-batching Engine.
//
//   POST /v1/chat/completions, /v1/completions   generation (JSON or SSE stream), api.h has the request rules
//   GET  /v1/models, /v1/models/{id}, /health, /metrics (Prometheus text)
//   POST /tokenize ({"prompt"} or {"messages","tools"}), /detokenize ({"tokens"})
//
// Threads: cpp-httplib serves each connection on a pool thread; every choice is one engine request whose events
// (engine thread) go into a per-request channel that the connection's thread drains, so the engine never
// waits on a socket. A streaming response writes each chunk as its tokens arrive.
// Limits: bodies over max_body_bytes → 413; more than slots + max_queue unfinished choices → 429; with an API
// key every route but /health needs `Authorization: Bearer KEY` → else 401. Errors use OpenAI's JSON shape.
// Disconnects: a stream whose write fails, or a non-streaming request whose socket the peer closed (polled while
// waiting), cancels its engine requests. Shutdown: new generations get 503, in-flight ones get up to
// shutdown_grace_s to finish, then are cancelled (their streams end with finish_reason "cancelled"), then the
// listener stops.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "infer/engine.h"
#include "infer/infer_weights.h"
#include "model/weights.h"
#include "server/api.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
class Request;
struct Response;
}  // namespace httplib

namespace dsv3::server {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (see bound_port())
  std::string api_key;             // empty: no authentication
  std::string model_name;          // served model id
  int64_t max_queue = 256;         // unfinished choices allowed beyond the engine's slots
  size_t max_body_bytes = size_t(8) << 20;
  int http_threads = 0;            // 0: 2 × (slots + 16), at least 32
  double shutdown_grace_s = 10.0;  // in-flight generations may finish for this long after a shutdown request
  int keep_alive_s = 2;            // idle keep-alive connections close after this (also bounds shutdown)
  void validate() const;
};

class Server {
 public:
  // `tokenizer` must outlive the server; the engine shares the weights' storage. The engine is created and
  // started here.
  Server(const infer::InferWeights& weights, const tok::Tokenizer& tokenizer,
         const infer::EngineConfig& engine_config, ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket (throws dsv3::Error if it cannot) and returns the port.
  int bind();
  // Serves until shutdown() has drained and stopped the listener. Call bind() first.
  void run();
  // Thread-safe, idempotent; returns once the listener is stopped (run() then returns).
  void shutdown();

  int bound_port() const { return port_; }
  const ApiContext& api() const { return api_; }
  const infer::Engine& engine() const { return *engine_; }
  std::string metrics_text();

 private:
  struct Generation;
  void routes();
  void handle_generate(const httplib::Request& req, httplib::Response& res, Endpoint ep);
  std::shared_ptr<Generation> start(GenerationSpec spec, const httplib::Request& req);
  std::vector<std::pair<int64_t, ChoiceDelta>> pump(Generation& g, std::chrono::milliseconds wait);
  void finish(Generation& g);
  void handle_tokenize(const httplib::Request& req, httplib::Response& res);
  void handle_detokenize(const httplib::Request& req, httplib::Response& res);

  const tok::Tokenizer& tokenizer_;
  ServerConfig cfg_;
  ApiContext api_;
  int port_ = -1;
  int64_t created_ = 0;  // unix time of start, for /v1/models
  Metrics metrics_;
  std::unique_ptr<httplib::Server> http_;

  std::mutex mu_;                      // guards active_ and the admission check
  std::set<Generation*> active_;
  std::atomic<int64_t> active_choices_{0};
  std::atomic<bool> draining_{false};
  std::atomic<bool> run_called_{false};
  std::mutex shutdown_mu_;  // serialises shutdown() calls

  std::unique_ptr<infer::Engine> engine_;  // last: destroyed first, its final callbacks still see the members
};

}  // namespace dsv3::server
