// HTTP layer of `dsv3 serve` on cpp-httplib (see server.h for the routes, threads, limits and shutdown).
#include "server/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <condition_variable>
#include <ctime>
#include <deque>
#include <random>
#include <thread>

#include "dsv3/error.h"
#include "tokenizer/unicode.h"

namespace dsv3::server {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

void ServerConfig::validate() const {
  DSV3_CHECK(port >= 0 && port <= 65535, "serve: port must be in [0, 65535], got ", port);
  DSV3_CHECK(max_queue >= 0, "serve: max queue must be >= 0, got ", max_queue);
  DSV3_CHECK(max_body_bytes >= 1024, "serve: max body bytes must be >= 1024, got ", max_body_bytes);
  DSV3_CHECK(http_threads >= 0, "serve: http threads must be >= 0, got ", http_threads);
  DSV3_CHECK(shutdown_grace_s >= 0, "serve: shutdown grace must be >= 0 s, got ", shutdown_grace_s);
  DSV3_CHECK(keep_alive_s >= 1, "serve: keep-alive must be >= 1 s, got ", keep_alive_s);
  DSV3_CHECK(!model_name.empty(), "serve: the served model name is empty");
}

namespace {

// Engine events of one HTTP request's choices, filled on the engine thread, drained by the connection's thread.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int64_t, infer::TokenEvent>> events;  // (choice index, event)
};

// The server's socket for this request's connection, found by its peer and local address (cpp-httplib 0.11 does
// not expose it). -1 if not found: then only a failed write reveals a disconnect.
int find_connection_socket(const httplib::Request& req) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    sockaddr_storage peer{}, local{};
    socklen_t pl = sizeof peer, ll = sizeof local;
    if (getpeername(int(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(int(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    auto addr_port = [](const sockaddr_storage& s, std::string& addr, int& port) {
      char buf[INET6_ADDRSTRLEN] = {0};
      if (s.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&s);
        inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
        port = ntohs(a->sin_port);
      } else if (s.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&s);
        inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
        port = ntohs(a->sin6_port);
      } else {
        port = -1;
      }
      addr = buf;
    };
    std::string pa, la;
    int pp = -1, lp = -1;
    addr_port(peer, pa, pp);
    addr_port(local, la, lp);
    if (pp == req.remote_port && pa == req.remote_addr && lp == req.local_port) {
      found = int(fd);
      break;
    }
  }
  closedir(d);
  return found;
}

// The peer closed its side (or the socket failed).
bool peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

json parse_body(const httplib::Request& req) {
  try {
    return json::parse(req.body);
  } catch (const json::parse_error& e) {
    throw ApiError(400, std::string("malformed JSON in the request body: ") + e.what(), "", "invalid_json");
  }
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_json(e)); }

std::string sse(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

const std::vector<std::pair<std::string, std::string>> kRoutes = {
    {"/v1/chat/completions", "POST"}, {"/v1/completions", "POST"}, {"/tokenize", "POST"}, {"/detokenize", "POST"},
    {"/v1/models", "GET"},            {"/health", "GET"},          {"/metrics", "GET"}};

std::string endpoint_label(const std::string& path) {
  for (const auto& [p, m] : kRoutes)
    if (p == path) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

int64_t unix_now() { return int64_t(std::time(nullptr)); }

}  // namespace

struct Server::Generation {
  GenerationSpec spec;
  std::string id;
  int64_t created = 0;
  std::shared_ptr<Channel> ch = std::make_shared<Channel>();
  std::vector<uint64_t> engine_ids;
  std::vector<char> engine_done, cancel_sent;
  std::vector<ChoiceAssembler> choices;
  std::vector<int64_t> text_bytes;  // per choice: UTF-8 bytes of text sent so far (completions text_offset)
  int64_t prompt_tokens = 0;
  std::atomic<int64_t> kv_tokens{0};
  int fd = -1;
  bool role_sent = false;
  bool completed = false;  // the full response went out
  bool finished = false;   // finish() ran

  bool all_finished() const {
    for (const ChoiceAssembler& c : choices)
      if (!c.finished()) return false;
    return true;
  }
  int64_t completion_tokens() const {
    int64_t n = 0;
    for (const ChoiceAssembler& c : choices) n += c.completion_tokens();
    return n;
  }
};

Server::Server(const infer::InferWeights& weights, const tok::Tokenizer& tokenizer,
               const infer::EngineConfig& engine_config, ServerConfig config)
    : tokenizer_(tokenizer), cfg_(std::move(config)) {
  cfg_.validate();
  DSV3_CHECK(tokenizer.vocab_size() <= weights.cfg.vocab_size, "serve: the tokenizer has ids up to ",
             tokenizer.vocab_size() - 1, " but the model's vocabulary is ", weights.cfg.vocab_size);
  engine_ = std::make_unique<infer::Engine>(weights, engine_config);
  api_.tokenizer = &tokenizer_;
  api_.model_name = cfg_.model_name;
  api_.vocab_size = weights.cfg.vocab_size;
  api_.context_length = engine_->config().max_seq_len;
  created_ = unix_now();
  http_ = std::make_unique<httplib::Server>();
  const int threads = cfg_.http_threads > 0
                          ? cfg_.http_threads
                          : int(std::max<int64_t>(32, 2 * (engine_->config().max_slots + 16)));
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  http_->set_payload_max_length(cfg_.max_body_bytes);
  http_->set_keep_alive_timeout(cfg_.keep_alive_s);
  routes();
  engine_->start();
}

Server::~Server() {
  if (http_) http_->stop();
  engine_.reset();  // cancels what is left; the callbacks still find the members alive
}

int Server::bind() {
  if (cfg_.port == 0) {
    port_ = http_->bind_to_any_port(cfg_.host.c_str());
  } else {
    port_ = http_->bind_to_port(cfg_.host.c_str(), cfg_.port) ? cfg_.port : -1;
  }
  DSV3_CHECK(port_ > 0, "serve: cannot listen on ", cfg_.host, ":", cfg_.port,
             " (address in use, not a local address, or not permitted)");
  return port_;
}

void Server::run() {
  DSV3_CHECK(port_ > 0, "serve: bind() before run()");
  run_called_ = true;
  if (draining_) return;
  http_->listen_after_bind();
}

void Server::shutdown() {
  std::lock_guard<std::mutex> once(shutdown_mu_);
  if (!draining_.exchange(true)) {
    auto wait_idle = [&](double seconds) {
      const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
      while (Clock::now() < deadline) {
        {
          std::lock_guard<std::mutex> lk(mu_);
          if (active_.empty()) return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    };
    wait_idle(cfg_.shutdown_grace_s);
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (Generation* g : active_)
        for (uint64_t id : g->engine_ids) engine_->cancel(id);
    }
    wait_idle(3.0);
  }
  // A shutdown that races run()'s start: wait until the listener runs, or stop() would find nothing to stop.
  for (int i = 0; i < 200 && run_called_ && !http_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
}

std::string Server::metrics_text() {
  MetricsSnapshot s;
  s.engine = engine_->stats();
  s.active_choices = active_choices_.load();
  {
    std::lock_guard<std::mutex> lk(mu_);
    s.active_requests = int64_t(active_.size());
    for (Generation* g : active_) s.kv_tokens_in_use += g->kv_tokens.load();
  }
  s.kv_token_capacity = engine_->kv_config().token_capacity();
  s.slots = engine_->config().max_slots;
  return metrics_.render(s);
}

std::shared_ptr<Server::Generation> Server::start(GenerationSpec spec, const httplib::Request& req) {
  auto g = std::make_shared<Generation>();
  g->spec = std::move(spec);
  const GenerationSpec& s = g->spec;
  g->id = new_id(s.endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  g->created = unix_now();
  const int64_t n = s.n_choices();
  for (const auto& p : s.prompts) g->prompt_tokens += int64_t(p.size());
  g->engine_done.assign(size_t(n), 0);
  g->cancel_sent.assign(size_t(n), 0);
  g->text_bytes.assign(size_t(n), 0);
  for (int64_t k = 0; k < n; ++k) g->choices.emplace_back(tokenizer_, s);
  g->fd = find_connection_socket(req);

  std::random_device rd;
  std::lock_guard<std::mutex> lk(mu_);
  if (draining_) throw ApiError(503, "the server is shutting down", "", "shutting_down");
  const int64_t limit = engine_->config().max_slots + cfg_.max_queue;
  if (active_choices_.load() + n > limit) {
    metrics_.count_rejected();
    throw ApiError(429,
                   "the server is at capacity (" + std::to_string(active_choices_.load()) + " choices in progress, " +
                       std::to_string(limit) + " allowed); retry later",
                   "", "queue_full");
  }
  active_choices_ += n;
  for (int64_t k = 0; k < n; ++k) {
    const uint64_t random_seed = (uint64_t(rd()) << 32) ^ rd();
    infer::GenerationRequest r = s.engine_request(k, api_.context_length, random_seed);
    std::shared_ptr<Channel> ch = g->ch;
    try {
      g->engine_ids.push_back(engine_->submit(std::move(r), [this, ch, k](const infer::TokenEvent& ev) {
        {
          std::lock_guard<std::mutex> l(ch->mu);
          ch->events.emplace_back(k, ev);
        }
        ch->cv.notify_one();
        if (ev.finished) --active_choices_;
      }));
    } catch (const Error& e) {
      for (uint64_t id : g->engine_ids) engine_->cancel(id);
      active_choices_ -= n - k;
      throw ApiError(400, e.what(), "", "invalid_value");
    }
  }
  metrics_.add_prompt_tokens(g->prompt_tokens);
  active_.insert(g.get());
  return g;
}

void Server::finish(Generation& g) {
  if (g.finished) return;
  g.finished = true;
  int64_t cancelled = 0;
  for (size_t k = 0; k < g.engine_ids.size(); ++k) {
    if (g.engine_done[k] || g.cancel_sent[k]) continue;
    engine_->cancel(g.engine_ids[k]);
    g.cancel_sent[k] = 1;
    if (!g.choices[k].finished()) ++cancelled;
  }
  if (cancelled) metrics_.count_cancelled(cancelled);
  metrics_.add_completion_tokens(g.completion_tokens());
  std::lock_guard<std::mutex> lk(mu_);
  active_.erase(&g);
}

// Drains the channel (waiting up to `wait` for the first event) into the choices; cancels a choice's engine request
// once a stop string ended it; refreshes the KV estimate. Returns the non-empty deltas in arrival order.
std::vector<std::pair<int64_t, ChoiceDelta>> Server::pump(Generation& g, std::chrono::milliseconds wait) {
  std::deque<std::pair<int64_t, infer::TokenEvent>> evs;
  {
    std::unique_lock<std::mutex> lk(g.ch->mu);
    g.ch->cv.wait_for(lk, wait, [&] { return !g.ch->events.empty(); });
    evs.swap(g.ch->events);
  }
  std::vector<std::pair<int64_t, ChoiceDelta>> out;
  for (auto& [k, ev] : evs) {
    const size_t i = size_t(k);
    if (ev.finished) g.engine_done[i] = 1;
    ChoiceDelta d = g.choices[i].push(ev);
    if (g.choices[i].stopped_by_string() && !g.engine_done[i] && !g.cancel_sent[i]) {
      engine_->cancel(g.engine_ids[i]);
      g.cancel_sent[i] = 1;
    }
    if (!d.empty()) out.emplace_back(k, std::move(d));
  }
  const int64_t block = engine_->kv_config().block_size;
  int64_t kv = 0;
  for (size_t k = 0; k < g.choices.size(); ++k) {
    if (g.choices[k].finished()) continue;
    const int64_t len = int64_t(g.spec.prompts[k / size_t(g.spec.n)].size()) + g.choices[k].completion_tokens();
    kv += (len + block - 1) / block * block;
  }
  g.kv_tokens = kv;
  return out;
}

void Server::handle_generate(const httplib::Request& req, httplib::Response& res, Endpoint ep) {
  const json body = parse_body(req);
  GenerationSpec spec = ep == Endpoint::kChat ? parse_chat_request(body, api_) : parse_completion_request(body, api_);
  std::shared_ptr<Generation> g = start(std::move(spec), req);
  const bool chat = ep == Endpoint::kChat;

  if (!g->spec.stream) {
    struct Guard {  // any exit before the response is built cancels what is left
      Server* s;
      Generation* g;
      ~Guard() { s->finish(*g); }
    } guard{this, g.get()};
    while (!g->all_finished()) {
      pump(*g, std::chrono::milliseconds(100));
      if (!g->all_finished() && peer_closed(g->fd)) {
        finish(*g);
        res.status = 499;  // client closed the request; nothing is sent
        return;
      }
    }
    json choices = json::array();
    std::string error;
    for (size_t k = 0; k < g->choices.size(); ++k) {
      const ChoiceAssembler& c = g->choices[k];
      if (c.finish_reason() == "error") error = "generation failed for choice " + std::to_string(k);
      choices.push_back(choice_json(tokenizer_, g->spec.endpoint, int64_t(k), c, g->spec.logprobs));
    }
    finish(*g);
    if (!error.empty()) throw ApiError(500, error, "", "generation_failed");
    json out = {{"id", g->id},
                {"object", chat ? "chat.completion" : "text_completion"},
                {"created", g->created},
                {"model", g->spec.model},
                {"choices", std::move(choices)},
                {"usage", usage_json(g->prompt_tokens, g->completion_tokens())}};
    send_json(res, 200, out);
    return;
  }

  // Streaming: one SSE event per batch of deltas, in OpenAI's chunk shape.
  auto chunk = [g, chat](json choices) {
    json j = {{"id", g->id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", g->created},
              {"model", g->spec.model},
              {"choices", std::move(choices)}};
    if (g->spec.include_usage) j["usage"] = nullptr;
    return j;
  };
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, g, chat, chunk](size_t, httplib::DataSink& sink) -> bool {
        std::string out;
        if (chat && !g->role_sent) {
          json choices = json::array();
          for (size_t k = 0; k < g->choices.size(); ++k)
            choices.push_back({{"index", k},
                               {"delta", {{"role", "assistant"}, {"content", ""}}},
                               {"logprobs", nullptr},
                               {"finish_reason", nullptr}});
          out += sse(chunk(std::move(choices)));
        }
        g->role_sent = true;
        std::string error;
        for (auto& [k, d] : pump(*g, std::chrono::milliseconds(50))) {
          json c = delta_choice_json(tokenizer_, g->spec.endpoint, k, d, g->spec.logprobs, g->text_bytes[size_t(k)]);
          for (const LogprobEntry& e : d.logprobs)
            g->text_bytes[size_t(k)] += int64_t(tokenizer_.token_bytes(e.token).size());
          if (!d.error.empty()) error = d.error;
          out += sse(chunk(json::array({std::move(c)})));
        }
        if (!error.empty()) out += sse(error_json(ApiError(500, error, "", "generation_failed")));
        if (g->all_finished()) {
          if (g->spec.include_usage) {
            json u = chunk(json::array());
            u["usage"] = usage_json(g->prompt_tokens, g->completion_tokens());
            out += sse(u);
          }
          out += "data: [DONE]\n\n";
          if (!sink.write(out.data(), out.size())) return false;
          g->completed = true;
          finish(*g);
          sink.done();
          return true;
        }
        if (!out.empty()) return sink.write(out.data(), out.size());
        return !peer_closed(g->fd);
      },
      [this, g](bool) {
        if (!g->completed) finish(*g);  // the client went away (or the server stopped): cancel what is left
      });
}

void Server::handle_tokenize(const httplib::Request& req, httplib::Response& res) {
  const json body = parse_body(req);
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_body");
  if (body.contains("model") && !body["model"].is_null() && body["model"] != api_.model_name)
    throw ApiError(404, "The model '" + body["model"].dump() + "' does not exist", "model", "model_not_found");
  std::vector<int32_t> ids;
  if (body.contains("messages")) {
    const json tools = body.contains("tools") ? body["tools"] : json(nullptr);
    const json tool_choice = body.contains("tool_choice") ? body["tool_choice"] : json(nullptr);
    ids = tokenizer_.encode(render_chat_prompt(body["messages"], tools, tool_choice, tokenizer_), false);
  } else if (body.contains("prompt")) {
    if (!body["prompt"].is_string())
      throw ApiError(400, std::string("'prompt' must be a string, got ") + body["prompt"].type_name(), "prompt",
                     "invalid_type");
    bool add_special = tokenizer_.add_bos_default();
    if (body.contains("add_special_tokens")) {
      if (!body["add_special_tokens"].is_boolean())
        throw ApiError(400, "'add_special_tokens' must be a boolean", "add_special_tokens", "invalid_type");
      add_special = body["add_special_tokens"].get<bool>() && tokenizer_.add_bos_default();
    }
    ids = tokenizer_.encode(body["prompt"].get<std::string>(), add_special);
  } else {
    throw ApiError(400, "give 'prompt' (a string) or 'messages'", "prompt", "missing_field");
  }
  send_json(res, 200, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", api_.context_length}});
}

void Server::handle_detokenize(const httplib::Request& req, httplib::Response& res) {
  const json body = parse_body(req);
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_body");
  if (!body.contains("tokens") || !body["tokens"].is_array())
    throw ApiError(400, "'tokens' must be an array of token ids", "tokens", "invalid_type");
  std::vector<int32_t> ids;
  for (const json& t : body["tokens"]) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= api_.vocab_size)
      throw ApiError(400, "'tokens' must hold token ids in [0, " + std::to_string(api_.vocab_size) + ")", "tokens",
                     "invalid_value");
    ids.push_back(int32_t(t.get<int64_t>()));
  }
  send_json(res, 200, {{"prompt", tok::utf8_lossy(tokenizer_.decode(ids))}});
}

void Server::routes() {
  httplib::Server& h = *http_;
  // Every handler answers ApiError (and any other exception) in OpenAI's error shape.
  auto guarded = [](auto fn) {
    return [fn](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, std::string("internal error: ") + e.what(), "", "internal_error"));
      }
    };
  };
  h.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (cfg_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string want = "Bearer " + cfg_.api_key;
    // Constant-time comparison of equal-length strings.
    unsigned diff = auth.size() == want.size() ? 0u : 1u;
    for (size_t i = 0; i < std::min(auth.size(), want.size()); ++i) diff |= unsigned(auth[i] ^ want[i]);
    if (diff == 0) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401,
                             auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key",
                             "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  h.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.count_request(endpoint_label(req.path), res.status);
  });
  // Errors cpp-httplib raises itself (413 for an oversize body, 400 for a malformed request line, ...).
  h.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = "HTTP error " + std::to_string(res.status);
    if (res.status == 413) msg = "the request body is larger than this server accepts";
    if (res.status == 400) msg = "malformed HTTP request";
    send_error(res, ApiError(res.status, msg, "", res.status == 413 ? "body_too_large" : ""));
  });

  h.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining_) send_json(res, 503, {{"status", "shutting down"}});
    else send_json(res, 200, {{"status", "ok"}});
  });
  h.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  auto model_json = [this] {
    return json{{"id", cfg_.model_name},
                {"object", "model"},
                {"created", created_},
                {"owned_by", "dsv3"},
                {"max_model_len", api_.context_length}};
  };
  h.Get("/v1/models", [model_json](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model_json()})}});
  });
  h.Get(R"(/v1/models/(.+))", guarded([this, model_json](const httplib::Request& req, httplib::Response& res) {
          if (req.matches[1] != cfg_.model_name)
            throw ApiError(404, "The model '" + std::string(req.matches[1]) + "' does not exist", "model",
                           "model_not_found");
          send_json(res, 200, model_json());
        }));
  h.Post("/v1/chat/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
           handle_generate(req, res, Endpoint::kChat);
         }));
  h.Post("/v1/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
           handle_generate(req, res, Endpoint::kCompletions);
         }));
  h.Post("/tokenize", guarded([this](const httplib::Request& req, httplib::Response& res) { handle_tokenize(req, res); }));
  h.Post("/detokenize",
         guarded([this](const httplib::Request& req, httplib::Response& res) { handle_detokenize(req, res); }));

  // Anything else: 405 on a known path with the wrong method, else 404.
  auto fallback = [](const httplib::Request& req, httplib::Response& res) {
    for (const auto& [path, method] : kRoutes)
      if (path == req.path || (method == "GET" && req.path.rfind("/v1/models/", 0) == 0 && path == "/v1/models")) {
        res.set_header("Allow", method);
        send_error(res, ApiError(405, "method " + req.method + " is not allowed on " + req.path + " (use " + method +
                                          ")",
                                 "", "method_not_allowed"));
        return;
      }
    send_error(res, ApiError(404, "no route " + req.method + " " + req.path, "", "not_found"));
  };
  h.Get(".*", fallback);
  h.Post(".*", fallback);
  h.Put(".*", fallback);
  h.Delete(".*", fallback);
  h.Patch(".*", fallback);
  h.Options(".*", fallback);
}

}  // namespace dsv3::server
