// dsv3 plot RUN_DIR --out loss.png: training curves from RUN_DIR/metrics.jsonl as a PNG — top panel: train and
// validation next-token CE (main model, without the MTP and balance terms) against the step; bottom panel:
// MaxVio (mean over MoE layers of the step's batch, and the running-window value). No plotting dependency: a
// small rasterizer (lines, axes, a 5×7 bitmap font) and a PNG writer (a zlib stream with fixed-Huffman deflate
// and run matches; CRC-32 and Adler-32 computed here). A step logged more than once (a spike rollback re-ran
// it) is drawn from its last line.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "commands.h"
#include "dsv3/error.h"
#include "io/atomic_file.h"
#include "train/metrics.h"

namespace dsv3::cli {

namespace {

struct Rgb {
  uint8_t r, g, b;
};

// 5×7 glyphs, one string per row, '#' = ink.
const std::map<char, std::array<const char*, 7>>& font() {
  static const std::map<char, std::array<const char*, 7>> f = {
      {'0', {" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "}},
      {'1', {"  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
      {'2', {" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"}},
      {'3', {"#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "}},
      {'4', {"   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "}},
      {'5', {"#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "}},
      {'6', {"  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "}},
      {'7', {"#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "}},
      {'8', {" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "}},
      {'9', {" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "}},
      {'.', {"     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "}},
      {'-', {"     ", "     ", "     ", "#####", "     ", "     ", "     "}},
      {'+', {"     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "}},
      {' ', {"     ", "     ", "     ", "     ", "     ", "     ", "     "}},
      {'a', {"     ", "     ", " ### ", "    #", " ####", "#   #", " ####"}},
      {'c', {"     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### "}},
      {'d', {"    #", "    #", " ## #", "#  ##", "#   #", "#   #", " ####"}},
      {'e', {"     ", "     ", " ### ", "#   #", "#####", "#    ", " ### "}},
      {'i', {"  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### "}},
      {'l', {" ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
      {'m', {"     ", "     ", "## # ", "# # #", "# # #", "#   #", "#   #"}},
      {'n', {"     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #"}},
      {'o', {"     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### "}},
      {'p', {"     ", "     ", "#### ", "#   #", "#### ", "#    ", "#    "}},
      {'r', {"     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    "}},
      {'s', {"     ", "     ", " ####", "#    ", " ### ", "    #", "#### "}},
      {'t', {" #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## "}},
      {'v', {"     ", "     ", "#   #", "#   #", "#   #", " # # ", "  #  "}},
      {'w', {"     ", "     ", "#   #", "#   #", "# # #", "# # #", " # # "}},
      {'x', {"     ", "     ", "#   #", " # # ", "  #  ", " # # ", "#   #"}},
      {'b', {"#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#### "}},
      {'f', {"  ## ", " #  #", " #   ", "###  ", " #   ", " #   ", " #   "}},
      {'g', {"     ", "     ", " ####", "#   #", " ####", "    #", " ### "}},
      {'h', {"#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#   #"}},
      {'j', {"   # ", "     ", "  ## ", "   # ", "   # ", "#  # ", " ##  "}},
      {'k', {"#    ", "#    ", "#  # ", "# #  ", "##   ", "# #  ", "#  # "}},
      {'q', {"     ", "     ", " ## #", "#  ##", " ####", "    #", "    #"}},
      {'u', {"     ", "     ", "#   #", "#   #", "#   #", "#  ##", " ## #"}},
      {'y', {"     ", "     ", "#   #", "#   #", " ####", "    #", " ### "}},
      {'z', {"     ", "     ", "#####", "   # ", "  #  ", " #   ", "#####"}},
      {'_', {"     ", "     ", "     ", "     ", "     ", "     ", "#####"}},
      {'/', {"     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     "}},
  };
  return f;
}

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(size_t(w) * h * 3, 255) {}
  int width() const { return w_; }
  int height() const { return h_; }
  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(size_t(y) * w_ + x) * 3];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  void dot(int x, int y, Rgb c, int r) {
    for (int dy = -r; dy <= r; ++dy)
      for (int dx = -r; dx <= r; ++dx) set(x + dx, y + dy, c);
  }
  void line(int x0, int y0, int x1, int y1, Rgb c, int thick = 0) {  // Bresenham
    int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      dot(x0, y0, c, thick);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  // Text with its top-left corner at (x, y), glyphs scaled by `s`; unknown characters are blanks.
  void text(int x, int y, const std::string& s, Rgb c, int scale = 2) {
    for (char ch : s) {
      auto it = font().find(ch);
      if (it != font().end())
        for (int r = 0; r < 7; ++r)
          for (int k = 0; k < 5; ++k)
            if (it->second[size_t(r)][k] == '#')
              for (int a = 0; a < scale; ++a)
                for (int b = 0; b < scale; ++b) set(x + k * scale + b, y + r * scale + a, c);
      x += 6 * scale;
    }
  }
  static int text_width(const std::string& s, int scale = 2) { return int(s.size()) * 6 * scale; }
  const std::vector<uint8_t>& pixels() const { return px_; }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;  // [h, w, 3] RGB
};

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0) {
  static std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(char((v >> (8 * i)) & 0xff));
}

void chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, uint32_t(data.size()));
  std::string td = std::string(type, 4) + data;
  out += td;
  put_u32(out, crc32(reinterpret_cast<const uint8_t*>(td.data()), td.size()));
}

// Deflate (RFC 1951), one block with the fixed Huffman code. Matches are searched at two distances only —
// one pixel back (3 bytes) and one row up — which is where a plot's repetition is; greedy, up to 258 bytes.
class Deflater {
 public:
  std::string out;

  void compress(const std::string& raw, size_t row_bytes) {
    put(1, 1), put(1, 2);  // BFINAL, BTYPE = fixed Huffman
    const size_t n = raw.size();
    for (size_t i = 0; i < n;) {
      size_t best_len = 0, best_dist = 0;
      for (size_t d : {size_t(3), row_bytes}) {
        if (d == 0 || d > i || d > 32768) continue;
        size_t len = 0;
        while (len < 258 && i + len < n && raw[i + len] == raw[i + len - d]) ++len;
        if (len > best_len) best_len = len, best_dist = d;
      }
      if (best_len >= 3) {
        length(best_len), distance(best_dist);
        i += best_len;
      } else {
        literal(uint8_t(raw[i++]));
      }
    }
    literal(256);  // end of block
    if (nbits_ > 0) out.push_back(char(acc_ & 0xff));
  }

 private:
  uint32_t acc_ = 0;
  int nbits_ = 0;
  void put(uint32_t v, int n) {  // LSB first
    acc_ |= v << nbits_;
    nbits_ += n;
    while (nbits_ >= 8) out.push_back(char(acc_ & 0xff)), acc_ >>= 8, nbits_ -= 8;
  }
  void huff(uint32_t code, int n) {  // Huffman codes go MSB first
    uint32_t r = 0;
    for (int k = 0; k < n; ++k) r |= ((code >> k) & 1u) << (n - 1 - k);
    put(r, n);
  }
  void literal(uint32_t sym) {  // 0..287, fixed code
    if (sym < 144) huff(0x30 + sym, 8);
    else if (sym < 256) huff(0x190 + sym - 144, 9);
    else if (sym < 280) huff(sym - 256, 7);
    else huff(0xC0 + sym - 280, 8);
  }
  void length(size_t len) {
    static const int base[] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
                               115, 131, 163, 195, 227, 258};
    static const int extra[] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    int c = 28;
    while (base[c] > int(len)) --c;
    literal(257 + uint32_t(c));
    if (extra[c]) put(uint32_t(int(len) - base[c]), extra[c]);
  }
  void distance(size_t dist) {
    static const int base[] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
                               1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static const int extra[] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
                                12, 12, 13, 13};
    int c = 29;
    while (base[c] > int(dist)) --c;
    huff(uint32_t(c), 5);
    if (extra[c]) put(uint32_t(int(dist) - base[c]), extra[c]);
  }
};

// PNG: 8-bit RGB, filter 0 on every row, one zlib stream (fixed-Huffman deflate, see Deflater).
std::string encode_png(const Canvas& c) {
  std::string raw;
  const size_t row_bytes = size_t(c.width()) * 3 + 1;
  raw.reserve(size_t(c.height()) * row_bytes);
  for (int y = 0; y < c.height(); ++y) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(&c.pixels()[size_t(y) * c.width() * 3]), size_t(c.width()) * 3);
  }
  std::string z = {char(0x78), char(0x01)};
  Deflater d;
  d.compress(raw, row_bytes);
  z += d.out;
  uint32_t a = 1, b = 0;
  for (unsigned char ch : raw) a = (a + ch) % 65521, b = (b + a) % 65521;
  put_u32(z, (b << 16) | a);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, uint32_t(c.width()));
  put_u32(ihdr, uint32_t(c.height()));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", "");
  return png;
}

struct Series {
  std::string name;
  Rgb color;
  std::vector<std::pair<double, double>> xy;
  bool points = false;
};

std::string tick_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// One panel: frame, ticks, labels, series.
void draw_panel(Canvas& c, int x0, int y0, int w, int h, const std::string& title, const std::vector<Series>& ss) {
  const Rgb axis{40, 40, 40}, grid{225, 225, 225};
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Series& s : ss)
    for (auto [x, y] : s.xy)
      if (std::isfinite(y)) xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (xmax <= xmin) xmax = xmin + 1;
  if (ymax <= ymin) ymax = ymin + 1e-3 + std::abs(ymin) * 0.05;
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad, ymax += pad;
  auto X = [&](double x) { return x0 + int(std::lround((x - xmin) / (xmax - xmin) * (w - 1))); };
  auto Y = [&](double y) { return y0 + h - 1 - int(std::lround((y - ymin) / (ymax - ymin) * (h - 1))); };
  for (int i = 0; i <= 4; ++i) {
    const double yv = ymin + (ymax - ymin) * i / 4.0, xv = xmin + (xmax - xmin) * i / 4.0;
    c.line(x0, Y(yv), x0 + w - 1, Y(yv), grid);
    c.line(X(xv), y0, X(xv), y0 + h - 1, grid);
    const std::string yl = tick_label(yv), xl = tick_label(std::round(xv));
    c.text(x0 - 8 - Canvas::text_width(yl), Y(yv) - 7, yl, axis);
    c.text(X(xv) - Canvas::text_width(xl) / 2, y0 + h + 8, xl, axis);
  }
  c.line(x0, y0, x0, y0 + h - 1, axis), c.line(x0, y0 + h - 1, x0 + w - 1, y0 + h - 1, axis);
  c.line(x0 + w - 1, y0, x0 + w - 1, y0 + h - 1, axis), c.line(x0, y0, x0 + w - 1, y0, axis);
  c.text(x0 + w / 2 - Canvas::text_width(title, 3) / 2, y0 - 30, title, axis, 3);
  c.text(x0 + w / 2 - Canvas::text_width("step") / 2, y0 + h + 30, "step", axis);
  int ly = y0 + 10;
  for (const Series& s : ss) {
    for (size_t i = 0; i < s.xy.size(); ++i) {
      if (!std::isfinite(s.xy[i].second)) continue;
      if (s.points) c.dot(X(s.xy[i].first), Y(s.xy[i].second), s.color, 3);
      if (i > 0 && std::isfinite(s.xy[i - 1].second))
        c.line(X(s.xy[i - 1].first), Y(s.xy[i - 1].second), X(s.xy[i].first), Y(s.xy[i].second), s.color, 1);
    }
  }
  int name_w = 0;
  for (const Series& s : ss) name_w = std::max(name_w, Canvas::text_width(s.name));
  const int lx = x0 + w - std::max(200, name_w + 50);  // legend left edge, wide enough for the longest name
  for (int y = y0 + 4; y < y0 + 10 + 22 * int(ss.size()); ++y)  // legend background, over the curves
    for (int x = lx - 6; x < x0 + w - 4; ++x) c.set(x, y, Rgb{255, 255, 255});
  for (const Series& s : ss) {
    c.line(lx, ly + 7, lx + 30, ly + 7, s.color, 1);
    c.text(lx + 40, ly, s.name, s.color);
    ly += 22;
  }
}

}  // namespace

static void register_plot(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "plot", "Plot the loss, validation loss and MaxVio curves of one run, or of several runs in one figure, as a PNG");
  struct Opts {
    std::vector<std::string> runs;
    std::string out = "loss.png";
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("runs", o->runs,
                  "run directories (holding metrics.jsonl) or metrics.jsonl files; several: curves side by side")
      ->required();
  cmd->add_option("--out", o->out, "output PNG")->capture_default_str();
  cmd->callback([o] {
    namespace fs = std::filesystem;
    // Per run: (train CE, val CE) colours and the MaxVio-window colour.
    const Rgb palette[][2] = {{{31, 119, 180}, {214, 39, 40}}, {{255, 127, 14}, {148, 103, 189}},
                              {{44, 160, 44}, {140, 86, 75}}, {{23, 190, 207}, {227, 119, 194}}};
    const size_t n_colors = sizeof palette / sizeof palette[0];
    const bool several = o->runs.size() > 1;
    std::vector<Series> top, bottom;
    size_t total_steps = 0, total_evals = 0;
    for (size_t r = 0; r < o->runs.size(); ++r) {
      const std::string& run = o->runs[r];
      const std::string path = fs::is_directory(run) ? (fs::path(run) / "metrics.jsonl").string() : run;
      std::map<int64_t, nlohmann::json> steps, evals;
      for (const auto& j : train::read_metrics(path)) {
        const std::string type = j.value("type", "");
        if (type == "step" && !j.value("skipped", false)) steps[j.value("step", int64_t(0))] = j;
        if (type == "eval") evals[j.value("step", int64_t(0))] = j;
      }
      DSV3_CHECK(!steps.empty(), "no step lines in '", path, "'");
      auto num = [](const nlohmann::json& j, const char* k) {
        return j.contains(k) && j[k].is_number() ? j[k].get<double>() : NAN;
      };
      std::string label;
      if (several) {
        fs::path p = fs::is_directory(run) ? fs::path(run) : fs::path(run).parent_path();
        label = (p.filename().empty() ? p.parent_path().filename() : p.filename()).string() + " ";
      }
      const Rgb* col = palette[r % n_colors];
      Series loss{label + "train ce", col[0], {}}, val{label + "val ce", col[1], {}, true};
      Series mv{"maxvio", {44, 160, 44}, {}}, mvw{label + "maxvio window", several ? col[0] : Rgb{255, 127, 14}, {}};
      for (const auto& [st, j] : steps) {
        loss.xy.emplace_back(double(st), num(j, "main_ce"));  // comparable with val_loss (main CE)
        mv.xy.emplace_back(double(st), num(j, "maxvio_mean"));
        mvw.xy.emplace_back(double(st), num(j, "maxvio_window"));
      }
      for (const auto& [st, j] : evals) val.xy.emplace_back(double(st), num(j, "val_loss"));
      top.push_back(loss);
      if (!val.xy.empty()) top.push_back(val);
      if (!several) bottom.push_back(mv);
      bottom.push_back(mvw);
      total_steps += steps.size(), total_evals += evals.size();
    }
    Canvas c(1000, 800);
    draw_panel(c, 120, 50, 840, 280, "loss", top);
    draw_panel(c, 120, 460, 840, 260, "maxvio", bottom);
    io::atomic_write_file(o->out, encode_png(c));
    std::printf("wrote %s (%zu run(s), %zu steps, %zu evals)\n", o->out.c_str(), o->runs.size(), total_steps,
                total_evals);
  });
}

DSV3_REGISTER_COMMAND(register_plot);

}  // namespace dsv3::cli
