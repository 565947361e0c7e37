// A live `dsv3 serve` (tiny random model + a tokenizer trained to its vocabulary, loopback, free port) driven by:
//  * raw HTTP (cpp-httplib client, raw sockets): error statuses and shapes, limits, auth, the server surviving each;
//    a client disconnecting mid-stream cancels its generation (/metrics); a full queue answers 429; SIGTERM during
//    a stream ends the stream and the process (exit 0) within a few seconds;
//  * the official OpenAI Node client (tests/server/client/client_test.mjs, pinned in its package-lock.json):
//    chat and completions, streaming or not, n > 1, stop, seeds, logprobs, tools in the prompt, FIM, usage
//    against /tokenize, 32 concurrent streams each equal to the same request alone. The package is copied to
//    BUILD/server-client and installed with `npm ci` under a lock; skipped only when `node` is missing.
//  * `dsv3 chat` with piped stdin.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "server_test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using dsv3::test::ServeProcess;

constexpr const char* kKey = "test-key";

httplib::Headers auth() { return {{"Authorization", std::string("Bearer ") + kKey}}; }

// A blocking TCP connection for what httplib's client hides: reading part of a stream, then dropping it.
struct RawConn {
  int fd = -1;
  explicit RawConn(int port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) close_now();
  }
  ~RawConn() { close_now(); }
  void close_now() {
    if (fd >= 0) close(fd), fd = -1;
  }
  void post(const std::string& path, const std::string& body) {
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + kKey +
                            "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                            "\r\n\r\n" + body;
    ASSERT_EQ(send(fd, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
  }
  // Reads until `needle` appears in what was read so far, EOF, or the timeout; returns everything read.
  std::string read_until(const std::string& needle, double timeout_s) {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline && got.find(needle) == std::string::npos) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, size_t(n));
    }
    return got;
  }
};

// Value of an unlabelled metric in Prometheus text.
double metric(const std::string& text, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("\n" + name + " ([-+0-9.eE]+)\n"))) return -1;
  return std::stod(m[1]);
}

class ServerLive : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServeProcess();
    server_->start({"--parallel", "8", "--ctx", "2048", "--api-key", kKey, "--max-body-bytes", "65536",
                    "--served-model-name", "tiny-test", "--max-queue", "64"});
  }
  static void TearDownTestSuite() {
    if (server_) {
      EXPECT_EQ(server_->signal_and_wait(SIGTERM, 15), 0);
    }
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_GT(server_->port(), 0) << "server did not start"; }

  static httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  // A small valid chat request succeeds (the server keeps serving after an error).
  static void expect_serving() {
    auto c = client();
    auto r = c.Post("/v1/chat/completions", auth(),
                    R"({"model":"tiny-test","messages":[{"role":"user","content":"hi"}],"max_tokens":2})",
                    "application/json");
    ASSERT_TRUE(r) << "no response";
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(json::parse(r->body)["object"], "chat.completion");
  }
  static void expect_error(const httplib::Result& r, int status, const std::string& param = "") {
    ASSERT_TRUE(r) << "no response (status " << status << " expected)";
    EXPECT_EQ(r->status, status) << r->body;
    json j = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r->body;
    for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(j["error"].contains(k)) << k;
    EXPECT_TRUE(j["error"]["message"].is_string());
    if (!param.empty()) {
      EXPECT_EQ(j["error"]["param"], param) << r->body;
    }
    expect_serving();
  }

  static inline ServeProcess* server_ = nullptr;
};

TEST_F(ServerLive, RawHttpErrorsAreJsonAndTheServerSurvives) {
  auto c = client();
  const std::string path = "/v1/chat/completions";
  expect_error(c.Post(path.c_str(), auth(), "{\"model\": \"tiny-test\", \"messages\": [", "application/json"), 400);
  expect_error(c.Post(path.c_str(), auth(), R"({"messages":[{"role":"user","content":"hi"}],"temperature":"hot"})",
                      "application/json"),
               400, "temperature");
  expect_error(c.Post(path.c_str(), auth(), R"({"messages":[{"role":"user","content":"hi"}],"n":"two"})",
                      "application/json"),
               400, "n");
  expect_error(c.Post(path.c_str(), auth(), R"({"messages":"hi"})", "application/json"), 400, "messages");
  expect_error(c.Post("/v1/completions", auth(), R"({"prompt":[1,2,99999]})", "application/json"), 400, "prompt");
  expect_error(c.Post(path.c_str(), auth(), R"({"model":"gpt-4","messages":[{"role":"user","content":"hi"}]})",
                      "application/json"),
               404, "model");
  expect_error(c.Post(path.c_str(), auth(), std::string(100000, ' ') + "{}", "application/json"), 413);
  expect_error(c.Post(path.c_str(), R"({"messages":[{"role":"user","content":"hi"}]})", "application/json"), 401);
  expect_error(c.Post(path.c_str(), {{"Authorization", "Bearer wrong"}}, "{}", "application/json"), 401);
  expect_error(c.Get("/v1/nothing", auth()), 404);
  expect_error(c.Get(path.c_str(), auth()), 405);
  expect_error(c.Delete("/v1/models", auth()), 405);
  expect_error(c.Post("/tokenize", auth(), R"({"prompt": 5})", "application/json"), 400, "prompt");
  // /health needs no key; /v1/models lists the served name.
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = c.Get("/v1/models", auth());
  ASSERT_TRUE(m);
  EXPECT_EQ(json::parse(m->body)["data"][0]["id"], "tiny-test");
  // Tokenize / detokenize round trip.
  auto t = c.Post("/tokenize", auth(), R"({"prompt":"Hello there"})", "application/json");
  ASSERT_TRUE(t);
  const json tj = json::parse(t->body);
  EXPECT_EQ(tj["count"], tj["tokens"].size());
  auto d = c.Post("/detokenize", auth(), json{{"tokens", tj["tokens"]}}.dump(), "application/json");
  ASSERT_TRUE(d);
  EXPECT_EQ(json::parse(d->body)["prompt"], dsv3::test::server_tokenizer().decode(tj["tokens"].get<std::vector<int32_t>>()));
  // The metrics count requests by endpoint and status.
  auto mt = c.Get("/metrics", auth());
  ASSERT_TRUE(mt);
  EXPECT_NE(mt->body.find("dsv3_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}"), std::string::npos);
  EXPECT_NE(mt->body.find("dsv3_requests_total{endpoint=\"other\",status=\"404\"}"), std::string::npos);
}

TEST_F(ServerLive, OpenAiNodeClient) {
  if (std::system("command -v node >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  const fs::path src = fs::path(DSV3_SOURCE_DIR) / "tests/server/client", pkg = fs::path(DSV3_BINARY_DIR) / "server-client";
  fs::create_directories(pkg);
  const std::string install = "flock '" + (pkg / "npm.lock").string() + "' /bin/sh -c 'cd \"" + pkg.string() +
                              "\" && for f in package.json package-lock.json client_test.mjs; do cp \"" + src.string() +
                              "/$f\" .; done && { test -f node_modules/openai/package.json || npm ci --no-audit " +
                              "--no-fund > npm.log 2>&1; }'";
  ASSERT_EQ(std::system(install.c_str()), 0) << "npm ci failed in " << pkg << " (see npm.log there)";
  const std::string log = (pkg / ("client-" + std::to_string(getpid()) + ".log")).string();
  const std::string cmd = "cd '" + pkg.string() + "' && DSV3_URL=http://127.0.0.1:" + std::to_string(server_->port()) +
                          " DSV3_MODEL=tiny-test DSV3_API_KEY=" + kKey + " node client_test.mjs > '" + log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  std::printf("%s", ss.str().c_str());
  EXPECT_EQ(rc, 0) << ss.str();
  EXPECT_NE(ss.str().find("all client checks passed"), std::string::npos);
  fs::remove(log);
}

TEST_F(ServerLive, DisconnectCancelsTheGeneration) {
  auto c = client();
  auto before = c.Get("/metrics", auth());
  ASSERT_TRUE(before);
  const double cancelled0 = metric(before->body, "dsv3_requests_cancelled_total");
  {
    RawConn conn(server_->port());
    ASSERT_GE(conn.fd, 0);
    conn.post("/v1/completions",
              R"({"prompt":"Once upon a time","max_tokens":2000,"ignore_eos":true,"stream":true,"temperature":0})");
    const std::string got = conn.read_until("\"text\"", 20);
    ASSERT_NE(got.find("data: "), std::string::npos) << got;
  }  // the client goes away mid-stream
  {
    RawConn conn(server_->port());
    ASSERT_GE(conn.fd, 0);
    conn.post("/v1/completions", R"({"prompt":"Once upon a time","max_tokens":2000,"ignore_eos":true})");
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }  // and one waiting for a non-streaming answer
  double cancelled = cancelled0, running = -1, generated = -1;
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = c.Get("/metrics", auth());
    ASSERT_TRUE(m);
    text = m->body;
    cancelled = metric(text, "dsv3_requests_cancelled_total");
    running = metric(text, "dsv3_requests_running");
    if (cancelled >= cancelled0 + 2 && running == 0 && metric(text, "dsv3_choices_active") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(cancelled, cancelled0 + 2) << text;
  EXPECT_EQ(running, 0) << text;
  EXPECT_EQ(metric(text, "dsv3_choices_active"), 0) << text;
  EXPECT_EQ(metric(text, "dsv3_kv_cache_tokens_used"), 0) << text;
  // The engine stopped generating for them: the count does not move.
  generated = metric(text, "dsv3_generation_tokens_total");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto m2 = c.Get("/metrics", auth());
  EXPECT_EQ(metric(m2->body, "dsv3_generation_tokens_total"), generated);
  expect_serving();
}

TEST_F(ServerLive, ChatCliMatchesTheServer) {
  const std::string dir = dsv3::test::server_model_dir();
  const std::string out = (fs::temp_directory_path() / ("dsv3_chat_out_" + std::to_string(getpid()))).string();
  const std::string cmd = "printf 'Hello there\\n/reset\\nHello there\\n/exit\\nignored\\n' | OMP_NUM_THREADS=1 '" +
                          dsv3::test::dsv3_binary() + "' chat --model '" + dir +
                          "' --temperature 0 --max-tokens 6 > '" + out + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(out);
  std::stringstream ss;
  ss << f.rdbuf();
  fs::remove(out);
  auto c = client();
  auto r = c.Post("/v1/chat/completions", auth(),
                  R"({"messages":[{"role":"user","content":"Hello there"}],"max_tokens":6,"temperature":0})",
                  "application/json");
  ASSERT_TRUE(r);
  const std::string reply = json::parse(r->body)["choices"][0]["message"]["content"];
  // Two turns (the second after /reset, so the same prompt), then /exit: nothing else is read.
  EXPECT_EQ(ss.str(), reply + "\n" + reply + "\n");
}

// A separate server: one slot and no queue, so a second request is refused; then SIGTERM during a stream.
TEST(ServerShutdown, QueueFullThenSigtermDuringAStreamExitsCleanly) {
  ServeProcess s;
  s.start({"--parallel", "1", "--max-queue", "0", "--ctx", "4096", "--api-key", kKey, "--shutdown-grace", "0.5"});
  ASSERT_GT(s.port(), 0);
  RawConn conn(s.port());
  ASSERT_GE(conn.fd, 0);
  conn.post("/v1/completions",
            R"({"prompt":"Once upon a time","max_tokens":4000,"ignore_eos":true,"stream":true,"temperature":0})");
  const std::string head = conn.read_until("\"text\"", 20);
  ASSERT_NE(head.find("data: "), std::string::npos) << head;

  httplib::Client c("127.0.0.1", s.port());
  auto r = c.Post("/v1/completions", auth(), R"({"prompt":"hi","max_tokens":2})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "queue_full");

  double waited = 0;
  std::string tail;
  std::thread reader([&] { tail = conn.read_until("data: [DONE]", 10); });
  const int rc = s.signal_and_wait(SIGTERM, 10, &waited);
  reader.join();
  EXPECT_EQ(rc, 0) << "exit status";
  EXPECT_LT(waited, 6.0);
  // The in-flight stream was ended properly: cancelled after the grace period, then [DONE].
  EXPECT_NE(tail.find("\"finish_reason\":\"cancelled\""), std::string::npos) << tail.substr(0, 400);
  EXPECT_NE(tail.find("data: [DONE]"), std::string::npos);
}

}  // namespace

namespace {

// Runs `dsv3 ARGS` and returns (exit status, stderr).
std::pair<int, std::string> run_dsv3(const std::string& args) {
  const std::string err = (fs::temp_directory_path() / ("dsv3_serve_err_" + std::to_string(getpid()))).string();
  std::string cmd = dsv3::test::dsv3_binary();
  cmd += " " + args + " > /dev/null 2> '" + err + "'";
  const int rc = std::system(cmd.c_str());
  std::ifstream f(err);
  std::stringstream ss;
  ss << f.rdbuf();
  fs::remove(err);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ss.str()};
}

TEST(ServeCli, BadArgumentsFailWithAClearMessage) {
  const std::string dir = dsv3::test::server_model_dir();
  auto [rc, err] = run_dsv3("serve --model /nonexistent/dir --port 0");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("has no config.json"), std::string::npos) << err;
  std::tie(rc, err) = run_dsv3("serve --model '" + dir + "' --port 0 --parallel 0");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("--parallel must be positive"), std::string::npos) << err;
  std::tie(rc, err) = run_dsv3("serve --model '" + dir + "' --port 0 --host 203.0.113.7");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("cannot listen on 203.0.113.7"), std::string::npos) << err;
  std::tie(rc, err) = run_dsv3("serve --model '" + dir + "' --port 0 --tokenizer /nonexistent/tokenizer.json");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("not found"), std::string::npos) << err;
  std::tie(rc, err) = run_dsv3("chat --model /nonexistent/dir");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("has no tokenizer.json"), std::string::npos) << err;  // The shared inference options: a bad name is refused by the parser, naming the option.
  for (const char* bad : {"--kv-cache fp8", "--weights int4", "--lm-head f16"}) {
    std::tie(rc, err) = run_dsv3("serve --model '" + dir + "' --port 0 " + bad);
    EXPECT_NE(rc, 0) << bad;
    EXPECT_NE(err.find(std::string(bad).substr(0, std::string(bad).find(' '))), std::string::npos) << bad << ": " << err;
  }
}

}  // namespace
