// dsv3::Error and DSV3_CHECK: the one exception type thrown at every edge (config, weights, CLI, HTTP,
// data files). The message carries file:line of the check plus whatever context the caller streams in.
// Internal invariants that only a bug can break use DSV3_ASSERT (same mechanism, different wording).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dsv3 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace dsv3

// DSV3_CHECK(cond, "tensor ", name, " has shape ", shape) -> throws dsv3::Error("msg [file:line]").
#define DSV3_CHECK(cond, ...)                                                           \
  do {                                                                                  \
    if (!(cond)) ::dsv3::detail::throw_error(__FILE__, __LINE__, ::dsv3::detail::concat(__VA_ARGS__)); \
  } while (0)
#define DSV3_FAIL(...) ::dsv3::detail::throw_error(__FILE__, __LINE__, ::dsv3::detail::concat(__VA_ARGS__))
#define DSV3_ASSERT(cond)                                                               \
  do {                                                                                  \
    if (!(cond)) ::dsv3::detail::throw_error(__FILE__, __LINE__, "internal error: " #cond); \
  } while (0)
