// dsv3 convert: rewrite a DeepSeek-V3 model directory as an FP8 checkpoint (E4M3 + weight_scale_inv, the real
// checkpoint's layout) or as BF16 (src/fp8/convert.h has the rules).
#include <cstdio>
#include <unistd.h>

#include "commands.h"
#include "fp8/convert.h"

namespace dsv3::cli {

static void register_convert(CLI::App& root) {
  auto* cmd = root.add_subcommand("convert", "Convert an HF DeepSeek-V3 model directory to FP8 or BF16 storage");
  struct Opts {
    std::string to, in, out;
    bool force = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--to", o->to, "target storage: fp8 (V3 checkpoint format) or bf16")->required();
  cmd->add_option("--in", o->in, "input model directory (config.json + safetensors)")->required();
  cmd->add_option("--out", o->out, "output directory (must not exist unless --force)")->required();
  cmd->add_flag("--force", o->force, "replace an existing output directory");
  cmd->add_flag("--quiet", o->quiet, "no progress line");
  cmd->callback([o] {
    fp8::ConvertOptions opt;
    opt.in_dir = o->in;
    opt.out_dir = o->out;
    opt.to = fp8::parse_checkpoint_format(o->to);
    opt.force = o->force;
    const bool tty = isatty(fileno(stderr));
    if (!o->quiet)
      opt.progress = [tty](const fp8::ConvertProgress& p) {
        if (!tty && p.done != p.total && p.done % 256 != 0) return;
        std::fprintf(stderr, "%sconvert: %lld/%lld tensors, %.2f/%.2f GB", tty ? "\r" : "", (long long)p.done,
                     (long long)p.total, double(p.bytes_written) / 1e9, double(p.bytes_total) / 1e9);
        if (!tty || p.done == p.total) std::fputc('\n', stderr);
      };
    const fp8::ConvertStats s = fp8::convert_checkpoint(opt);
    std::printf("wrote %s (%s): %lld tensors, %lld FP8 weights, %.3f GB\n", o->out.c_str(), o->to.c_str(),
                (long long)s.n_tensors, (long long)s.n_fp8, double(s.bytes_out) / 1e9);
  });
}

DSV3_REGISTER_COMMAND(register_convert);

}  // namespace dsv3::cli
