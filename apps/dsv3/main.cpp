// dsv3: the command-line entry point. Subcommands live in cmd_*.cpp (see commands.h).
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include <unistd.h>

#include "commands.h"
#include "dsv3/error.h"

namespace dsv3::cli {

std::vector<Registrar>& registrars() {
  static std::vector<Registrar> r;
  return r;
}

std::vector<int64_t> parse_int_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    DSV3_CHECK(b != std::string::npos, "empty element in list \"", s, "\"");
    item = item.substr(b, e - b + 1);
    size_t pos = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    DSV3_CHECK(pos == item.size() && pos > 0, "not an integer: \"", item, "\" in list \"", s, "\"");
    out.push_back(v);
  }
  DSV3_CHECK(!out.empty(), "empty list");
  return out;
}

}  // namespace dsv3::cli

// OpenMP threads that spin while waiting (libgomp's default) cost several-fold throughput on a machine that
// runs anything else, because every barrier then waits out a descheduled spinner (BENCHMARKS.md). libgomp reads
// OMP_WAIT_POLICY when it is loaded, before main(), so when the user has not chosen a policy we re-execute
// ourselves once with OMP_WAIT_POLICY=passive. Set OMP_WAIT_POLICY=active to keep spinning.
static void ensure_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default policy
}

int main(int argc, char** argv) {
  ensure_passive_omp_wait(argv);
  CLI::App app{"dsv3: DeepSeek-V3 training and inference"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dsv3 0.1.0");
  for (auto r : dsv3::cli::registrars()) r(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const dsv3::Error& e) {
    std::fprintf(stderr, "dsv3: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv3: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
