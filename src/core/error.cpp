// Out-of-line thrower for DSV3_CHECK: keeps the check macro small at every call site.
#include "dsv3/error.h"

#include <cstring>

namespace dsv3::detail {

void throw_error(const char* file, int line, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
  throw Error(msg + " [" + base + ":" + std::to_string(line) + "]");
}

}  // namespace dsv3::detail
