// Subcommand registration for the dsv3 CLI. Each apps/dsv3/cmd_*.cpp file adds its subcommand(s) with
// DSV3_REGISTER_COMMAND(fn), where fn(CLI::App& root) creates the subcommand, its flags (each declared once
// with default and help) and its callback. main.cpp runs every registrar, parses, and turns dsv3::Error
// into a one-line message and exit code 1.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace dsv3::cli {

using Registrar = void (*)(CLI::App&);
std::vector<Registrar>& registrars();
struct AutoRegister {
  explicit AutoRegister(Registrar r) { registrars().push_back(r); }
};

// Parses "1,5,9" into ids; throws dsv3::Error on a malformed list.
std::vector<int64_t> parse_int_list(const std::string& s);

}  // namespace dsv3::cli

#define DSV3_CLI_CAT2(a, b) a##b
#define DSV3_CLI_CAT(a, b) DSV3_CLI_CAT2(a, b)
#define DSV3_REGISTER_COMMAND(fn) \
  static ::dsv3::cli::AutoRegister DSV3_CLI_CAT(dsv3_cmd_registrar_, __LINE__)(fn)
