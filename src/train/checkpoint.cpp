// Checkpoint write (temp dir → fsync → rename → latest pointer → prune) and read (see checkpoint.h).
#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "dsv3/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace dsv3::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStateFile = "trainer_state.safetensors";
constexpr const char* kLatest = "latest";

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DSV3_CHECK(fd >= 0, "cannot open directory '", dir.string(), "' to fsync it: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  DSV3_CHECK(rc == 0 || err == EINVAL || err == EROFS, "fsync of directory '", dir.string(),
             "' failed: ", std::strerror(err));
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  DSV3_CHECK(f.good(), "cannot read '", p.string(), "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// step-000123 → 123; -1 for any other name.
int64_t parse_step(const std::string& name) {
  if (!name.starts_with("step-") || name.size() <= 5) return -1;
  int64_t v = 0;
  for (char c : name.substr(5)) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kStateFile, ec) && fs::is_regular_file(dir / "config.json", ec);
}

void copy_tokenizer(const std::string& tokenizer, const fs::path& dst) {
  fs::path src = tokenizer;
  std::error_code ec;
  fs::path dir = fs::is_directory(src, ec) ? src : src.parent_path();
  fs::path tj = fs::is_directory(src, ec) ? src / "tokenizer.json" : src;
  DSV3_CHECK(fs::is_regular_file(tj, ec), "tokenizer '", tokenizer, "' not found (a tokenizer.json or its directory)");
  io::atomic_write_file((dst / "tokenizer.json").string(), read_text(tj));
  if (fs::is_regular_file(dir / "tokenizer_config.json", ec))
    io::atomic_write_file((dst / "tokenizer_config.json").string(), read_text(dir / "tokenizer_config.json"));
}

void pause_if_requested(const fs::path& root, int64_t step) {
  const char* env = std::getenv("DSV3_TEST_KILL_DURING_CHECKPOINT");
  if (env == nullptr || std::atoll(env) != step) return;
  io::atomic_write_file((root / ".paused_in_checkpoint").string(), std::to_string(::getpid()) + "\n");
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // until SIGKILL
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%06lld", static_cast<long long>(step));
  return buf;
}

std::string checkpoints_dir(const std::string& run_dir) { return (fs::path(run_dir) / "checkpoints").string(); }

std::string write_checkpoint(const std::string& run_dir, int64_t step, const ModelWeights& w, const AdamW& opt,
                             const json& trainer_state, const CheckpointWriteOptions& o) {
  DSV3_CHECK(o.weights_dtype == DType::F32 || o.weights_dtype == DType::BF16 || o.weights_dtype == DType::F8_E4M3,
             "checkpoint weights must be F32, BF16 or FP8 (E4M3)");
  const fs::path root = checkpoints_dir(run_dir);
  const std::string name = checkpoint_name(step);
  const fs::path final_dir = root / name;
  const fs::path tmp = root / (".tmp-" + name + "-" + std::to_string(::getpid()));
  std::error_code ec;
  try {
    fs::create_directories(root);
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp);

    w.save(tmp.string(), o.weights_dtype);
    json gen = {{"_from_model_config", true}, {"bos_token_id", w.cfg.bos_token_id},
                {"eos_token_id", w.cfg.eos_token_id}};
    io::atomic_write_file((tmp / "generation_config.json").string(), gen.dump(2) + "\n");
    if (!o.tokenizer.empty()) copy_tokenizer(o.tokenizer, tmp);
    pause_if_requested(root, step);

    std::vector<std::pair<std::string, Tensor>> tensors = opt.state_tensors();
    if (o.weights_dtype != DType::F32)
      for (const auto& [pname, t] : w.by_name) tensors.emplace_back("master." + pname, t);
    io::write_safetensors((tmp / kStateFile).string(), tensors,
                          {{"format", "dsv3-trainer-state"}, {"trainer_state", trainer_state.dump()}});
    fsync_dir(tmp);

    // Install: an older directory of the same name (a step re-reached after a rollback) is moved aside first.
    const fs::path old = root / (".old-" + name + "-" + std::to_string(::getpid()));
    const bool had_old = fs::exists(final_dir, ec);
    if (had_old) fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fsync_dir(root);
    if (had_old) fs::remove_all(old, ec);
    io::atomic_write_file((root / kLatest).string(), name + "\n");
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    const std::vector<std::string> kept = list_checkpoints(run_dir);
    DSV3_FAIL("checkpoint of step ", step, " in '", root.string(), "' failed: ", e.what(), "; ",
              kept.empty() ? std::string("no earlier checkpoint exists")
                           : "the previous checkpoint " + kept.back() + " is intact");
  }

  // Prune: stale temp dirs of dead writers, then all but the newest keep_last complete checkpoints.
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string n = entry.path().filename().string();
    if ((n.starts_with(".tmp-") || n.starts_with(".old-")) && entry.is_directory()) fs::remove_all(entry.path(), ec);
  }
  std::vector<std::string> all = list_checkpoints(run_dir);
  for (size_t i = 0; i + size_t(o.keep_last) < all.size(); ++i) fs::remove_all(all[i], ec);
  return final_dir.string();
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  const fs::path root = checkpoints_dir(run_dir);
  if (!fs::is_directory(root, ec)) return {};
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const int64_t s = parse_step(entry.path().filename().string());
    if (s >= 0 && entry.is_directory() && is_complete(entry.path())) found.emplace_back(s, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
}

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  const fs::path p = path;
  if (is_complete(p)) return p.string();
  DSV3_CHECK(fs::is_directory(p, ec), "resume: '", path, "' is neither a checkpoint nor a run directory");
  const fs::path root = checkpoints_dir(path);
  if (fs::is_regular_file(root / kLatest, ec)) {
    std::string name = read_text(root / kLatest);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    if (parse_step(name) >= 0 && is_complete(root / name)) return (root / name).string();
    std::fprintf(stderr, "resume: '%s' names '%s', which is not a complete checkpoint; using the newest one\n",
                 (root / kLatest).c_str(), name.c_str());
  }
  const std::vector<std::string> all = list_checkpoints(path);
  DSV3_CHECK(!all.empty(), "resume: no complete checkpoint under '", root.string(), "'");
  return all.back();
}

LoadedCheckpoint read_checkpoint(const std::string& dir) {
  LoadedCheckpoint ck;
  ck.dir = dir;
  const fs::path state_path = fs::path(dir) / kStateFile;
  auto file = io::SafetensorsFile::open(state_path.string());
  const auto& meta = file->metadata();
  auto fmt = meta.find("format");
  auto st = meta.find("trainer_state");
  DSV3_CHECK(fmt != meta.end() && fmt->second == "dsv3-trainer-state" && st != meta.end(), "'", state_path.string(),
             "' is not a dsv3 trainer state (metadata format/trainer_state missing)");
  try {
    ck.trainer_state = json::parse(st->second);
  } catch (const std::exception& e) {
    DSV3_FAIL("'", state_path.string(), "': trainer_state metadata is not valid JSON: ", e.what());
  }
  bool have_master = false;
  std::map<std::string, Tensor> master;
  for (const io::TensorInfo& info : file->tensors()) {
    Tensor t = file->get(info.name).clone();
    if (info.name.starts_with("master.")) {
      have_master = true;
      master.emplace(info.name.substr(7), std::move(t));
    } else {
      ck.optimizer.emplace(info.name, std::move(t));
    }
  }
  if (have_master) {
    ModelWeights w;
    w.cfg = ModelConfig::load(dir);
    for (const auto& [n, t] : master) {
      DSV3_CHECK(t.dtype == DType::F32, "master weight ", n, " in '", state_path.string(), "' is not F32");
      w.by_name.emplace(n, t);
    }
    w.bind();
    ck.weights = std::move(w);
  } else {
    ck.weights = ModelWeights::load(dir);
  }
  return ck;
}

}  // namespace dsv3::train
