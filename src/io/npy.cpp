// NumPy .npy writer and reader (see npy.h). The header is a Python dict literal; the reader parses the
// small subset NumPy itself writes (quoted strings, True/False, tuples of integers) and nothing more.
#include "io/npy.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>

#include "dsv3/error.h"
#include "io/atomic_file.h"

namespace dsv3::io {

namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes

const char* descr_of(DType t) {
  switch (t) {
    case DType::F32: return "<f4";
    case DType::F64: return "<f8";
    case DType::F16: return "<f2";
    case DType::BF16: return "<u2";
    case DType::I64: return "<i8";
    case DType::I32: return "<i4";
    case DType::I16: return "<i2";
    case DType::I8: return "|i1";
    case DType::U8: return "|u1";
    case DType::BOOL: return "|b1";
    default: return nullptr;
  }
}

// Maps a NumPy type string ("<f4", "|u1", "=i8", ...) to a DType; nullopt if unsupported.
std::optional<DType> dtype_of_descr(const std::string& d) {
  if (d.size() < 3) return std::nullopt;
  const char order = d[0];
  const std::string code = d.substr(1);
  static const std::map<std::string, DType> kCodes = {
      {"f4", DType::F32}, {"f8", DType::F64}, {"f2", DType::F16}, {"u2", DType::BF16}, {"i8", DType::I64},
      {"i4", DType::I32}, {"i2", DType::I16}, {"i1", DType::I8},  {"u1", DType::U8},   {"b1", DType::BOOL}};
  auto it = kCodes.find(code);
  if (it == kCodes.end()) return std::nullopt;
  const bool one_byte = dtype_size(it->second) == 1;
  // '<' little-endian, '=' native (this code only runs on little-endian hosts), '|' / '>' fine for 1 byte.
  if (order == '<' || order == '=' || (one_byte && (order == '|' || order == '>'))) return it->second;
  return std::nullopt;
}

// A cursor over the header dict text; every failure throws naming the file.
struct DictParser {
  const std::string& path;
  const std::string& s;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& what) const {
    DSV3_FAIL("npy file '", path, "': malformed header (", what, " at column ", i, "): ", s);
  }
  void ws() {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("expected a quoted string");
    char q = s[i++];
    size_t start = i;
    while (i < s.size() && s[i] != q) ++i;
    if (i >= s.size()) fail("unterminated string");
    return s.substr(start, i++ - start);
  }
  bool boolean() {
    ws();
    if (s.compare(i, 4, "True") == 0) return i += 4, true;
    if (s.compare(i, 5, "False") == 0) return i += 5, false;
    fail("expected True or False");
  }
  Shape tuple() {
    expect('(');
    Shape out;
    while (!eat(')')) {
      ws();
      if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) fail("expected a non-negative integer");
      int64_t v = 0;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) fail("dimension too large");
        v = v * 10 + (s[i++] - '0');
      }
      if (i < s.size() && s[i] == 'L') ++i;  // Python 2 long suffix
      out.push_back(v);
      if (!eat(',')) {
        expect(')');
        break;
      }
    }
    return out;
  }
};

}  // namespace

void write_npy(const std::string& path, const Tensor& t) {
  const char* descr = descr_of(t.dtype);
  DSV3_CHECK(descr != nullptr, "npy file '", path, "': dtype ", dtype_name(t.dtype),
             " has no NumPy equivalent (convert to F32 first)");
  DSV3_CHECK(t.data != nullptr || t.numel() == 0, "npy file '", path, "': tensor has no data");
  std::string shape = "(";
  for (size_t k = 0; k < t.shape.size(); ++k) shape += std::to_string(t.shape[k]) + (t.shape.size() == 1 ? "," : k + 1 < t.shape.size() ? ", " : "");
  shape += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces and end with '\n' so magic(6) + version(2) + len + header is a multiple of 64.
  size_t prefix = 10;
  size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
  if (total - prefix > 65535) {  // version 2.0 has a 4-byte length; only for absurd ranks
    prefix = 12;
    total = (prefix + header.size() + 1 + 63) / 64 * 64;
  }
  header.append(total - prefix - header.size() - 1, ' ');
  header += '\n';
  std::string pre(kMagic, 6);
  const uint32_t hlen = uint32_t(header.size());
  pre += char(prefix == 10 ? 1 : 2);
  pre += char(0);
  pre += char(hlen & 0xff);
  pre += char((hlen >> 8) & 0xff);
  if (prefix == 12) {
    pre += char((hlen >> 16) & 0xff);
    pre += char((hlen >> 24) & 0xff);
  }
  atomic_write_file(path, [&](std::FILE* f) {
    fwrite_checked(f, pre.data(), pre.size(), path);
    fwrite_checked(f, header.data(), header.size(), path);
    fwrite_checked(f, t.data, t.nbytes(), path);
  });
}

Tensor read_npy(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  DSV3_CHECK(f != nullptr, "npy file '", path, "': cannot open: ", std::strerror(errno));
  struct stat st {};
  DSV3_CHECK(::fstat(::fileno(f.get()), &st) == 0, "npy file '", path, "': cannot stat: ", std::strerror(errno));
  const uint64_t size = uint64_t(st.st_size);

  unsigned char pre[12];
  DSV3_CHECK(size >= 10 && std::fread(pre, 1, 10, f.get()) == 10, "npy file '", path, "': too short (", size,
             " bytes)");
  DSV3_CHECK(std::memcmp(pre, kMagic, 6) == 0, "npy file '", path, "': bad magic (not a .npy file)");
  const int major = pre[6];
  DSV3_CHECK(major >= 1 && major <= 3, "npy file '", path, "': unsupported version ", major, ".", int(pre[7]));
  uint64_t hlen = pre[8] | (uint64_t(pre[9]) << 8);
  uint64_t prefix = 10;
  if (major >= 2) {
    DSV3_CHECK(std::fread(pre + 10, 1, 2, f.get()) == 2, "npy file '", path, "': truncated header length");
    hlen |= (uint64_t(pre[10]) << 16) | (uint64_t(pre[11]) << 24);
    prefix = 12;
  }
  DSV3_CHECK(hlen <= (1u << 24) && prefix + hlen <= size, "npy file '", path, "': header length ", hlen,
             " runs past the end of the ", size, "-byte file");
  std::string header(hlen, '\0');
  DSV3_CHECK(std::fread(header.data(), 1, hlen, f.get()) == hlen, "npy file '", path, "': short read of header");

  DictParser p{path, header};
  std::optional<std::string> descr;
  std::optional<bool> fortran;
  std::optional<Shape> shape;
  p.expect('{');
  while (!p.eat('}')) {
    std::string key = p.str();
    p.expect(':');
    if (key == "descr" && !descr) descr = p.str();
    else if (key == "fortran_order" && !fortran) fortran = p.boolean();
    else if (key == "shape" && !shape) shape = p.tuple();
    else p.fail("unexpected or repeated key '" + key + "'");
    if (!p.eat(',')) {
      p.expect('}');
      break;
    }
  }
  p.ws();
  if (p.i != header.size()) p.fail("trailing characters after the dict");
  if (!descr || !fortran || !shape) p.fail("missing one of 'descr', 'fortran_order', 'shape'");

  std::optional<DType> dt = dtype_of_descr(*descr);
  DSV3_CHECK(dt.has_value(), "npy file '", path, "': unsupported dtype '", *descr, "'");
  int non_unit = 0;
  for (int64_t d : *shape) non_unit += d != 1;
  DSV3_CHECK(!*fortran || non_unit <= 1, "npy file '", path, "': Fortran-ordered arrays are not supported");

  uint64_t bytes = dtype_size(*dt);
  for (int64_t d : *shape)
    DSV3_CHECK(!__builtin_mul_overflow(bytes, uint64_t(d), &bytes), "npy file '", path, "': shape overflows");
  DSV3_CHECK(prefix + hlen + bytes == size, "npy file '", path, "': shape ", shape_str(*shape), " of ", *descr,
             " needs ", bytes, " data bytes but the file has ", size - prefix - hlen);
  Tensor t = Tensor::empty(*shape, *dt);
  DSV3_CHECK(std::fread(t.data, 1, bytes, f.get()) == bytes, "npy file '", path, "': short read of data");
  return t;
}

}  // namespace dsv3::io
