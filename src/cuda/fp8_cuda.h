// The FP8 recipe on an NVIDIA GPU (sm_90): the tile quantizers of src/fp8/quantize.h, bit for bit, and the
// block-scaled E4M3 GEMM of src/fp8/fp8_gemm.h through cuBLASLt, with an own simple kernel as fallback and
// GPU-side reference, plus a BF16 cuBLASLt GEMM as the speed baseline (docs/cuda.md).
//
// Plain C++ header: includers need no CUDA headers. Every pointer named *_dev is device memory; every call is
// issued on the default stream and checked (a failing CUDA or cuBLAS call throws dsv3::Error naming the call
// and its status).
//
// Operand layouts (row-major, strides in elements), the "NT" form of fp8::BlockScaledOperands:
//   X codes [M, K] (ldx), activation scales sx: one per 1×128 tile, stored M-major: sx[kb·M + m]
//   W codes [N, K] (ldw), weight scales sw: one per 128×128 block, sw[nb·weight_scale_ld(K) + kb]
//   Y [M, N] (ldy) = Σ_kb (sx·sw) · Σ_{k in block kb} e4m3(x[m,k])·e4m3(w[n,k])
// These are the scale layouts cuBLASLt reads for CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F (its B = X) and
// CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F (its A = W), so the quantizers write them directly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fp8/quantize.h"

namespace dsv3::cuda {

// True when a CUDA driver and at least one device are present (never throws).
bool device_available();
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 1980 MHz, 80 GiB" (device 0).
std::string device_summary();
void synchronize();

// Owned device memory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return p_; }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }
  void upload(const void* host, size_t bytes);
  void download(void* host, size_t bytes) const;
  void fill_bytes(uint8_t value);  // memset of the whole buffer

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Where the scale of tile (tr, tc) lives: scales[tr·tile_row_stride + tc·tile_col_stride].
// fp8::quantize_tiles' own layout is {ceil(cols/tile_cols), 1}.
struct ScaleLayout {
  int64_t tile_row_stride = 0, tile_col_stride = 1;
};

// fp8::quantize_tiles on the device, same rules and bit-identical codes and scales: x_dev [rows, cols] (ldx) →
// codes_dev [rows, cols] (row stride ldc), scales_dev at `layout`. Any tile shape (1×128, 128×128, 128×1, ...).
struct QuantizeArgs {
  const float* x_dev = nullptr;
  int64_t rows = 0, cols = 0, ldx = 0;
  int64_t tile_rows = 1, tile_cols = fp8::kTile;
  fp8::ScaleMode mode = fp8::ScaleMode::kAmax;
  uint8_t* codes_dev = nullptr;
  int64_t ldc = 0;
  float* scales_dev = nullptr;
  ScaleLayout layout;
};
void quantize_tiles(const QuantizeArgs& a);

// Scale storage of the GEMM operands (see the header comment).
inline int64_t k_blocks(int64_t K) { return (K + fp8::kTile - 1) / fp8::kTile; }
inline int64_t weight_scale_ld(int64_t K) { return (k_blocks(K) + 3) / 4 * 4; }  // padded to 16 bytes
inline int64_t activation_scale_count(int64_t M, int64_t K) { return M * k_blocks(K); }
inline int64_t weight_scale_count(int64_t N, int64_t K) { return k_blocks(N) * weight_scale_ld(K); }
inline ScaleLayout activation_scale_layout(int64_t M) { return {1, M}; }
inline ScaleLayout weight_scale_layout(int64_t K) { return {weight_scale_ld(K), 1}; }
// X [M, K] → codes [M, K] (row stride K) + sx; W [N, K] → codes [N, K] (row stride K) + sw.
void quantize_activations(const float* x_dev, int64_t M, int64_t K, int64_t ldx, fp8::ScaleMode mode,
                          uint8_t* codes_dev, float* sx_dev);
void quantize_weights(const float* w_dev, int64_t N, int64_t K, int64_t ldw, fp8::ScaleMode mode,
                      uint8_t* codes_dev, float* sw_dev);

// Element-wise helpers for benchmarks and tests: f32 → BF16 (RNE) and deterministic pseudo-random fill.
void convert_f32_to_bf16(const float* src_dev, uint16_t* dst_dev, int64_t n);
// dst[i] = a uniform value in [-1, 1) times 2^(e) with e uniform in [-spread, spread] per row of `cols`
// (rows of different magnitudes exercise the per-tile scales).
void fill_random(float* dst_dev, int64_t rows, int64_t cols, uint64_t seed, int spread = 4);

enum class OutType { kF32, kBF16 };
enum class GemmPath { kAuto, kCublasLt, kOwnKernel };
const char* path_name(GemmPath p);

struct Fp8GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const uint8_t* x_dev = nullptr; int64_t ldx = 0;  // [M, K] E4M3
  const float* sx_dev = nullptr;                    // activation_scale_layout(M)
  const uint8_t* w_dev = nullptr; int64_t ldw = 0;  // [N, K] E4M3
  const float* sw_dev = nullptr;                    // weight_scale_layout(K)
  void* y_dev = nullptr; int64_t ldy = 0;           // [M, N] F32 or BF16
  OutType out = OutType::kF32;
};

struct Bf16GemmArgs {  // Y[M, N] = X[M, K]·W[N, K]ᵀ, BF16 in, F32 accumulation
  int64_t M = 0, N = 0, K = 0;
  const uint16_t* x_dev = nullptr; int64_t ldx = 0;
  const uint16_t* w_dev = nullptr; int64_t ldw = 0;
  void* y_dev = nullptr; int64_t ldy = 0;
  OutType out = OutType::kF32;
};

// cuBLASLt handle, workspace and per-shape plans (the algorithm search runs once per shape).
class GemmContext {
 public:
  GemmContext();
  ~GemmContext();
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;

  // kAuto: cuBLASLt when it supports the shape, else the own kernel. kCublasLt throws when unsupported.
  // Returns the path that ran.
  GemmPath fp8_gemm(const Fp8GemmArgs& a, GemmPath path = GemmPath::kAuto);
  // Whether cuBLASLt has a block-scaled FP8 algorithm for this shape/alignment (and why not, if `why`).
  bool cublaslt_supports(const Fp8GemmArgs& a, std::string* why = nullptr);
  void bf16_gemm(const Bf16GemmArgs& a);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The own kernel alone (no context needed): per output, each 128-wide K block summed sequentially in F32
// (products exact), promoted as total += partial·(sx·sw) with every operation rounded separately — the
// arithmetic of fp8::block_scaled_gemm_reference, so both give identical bits.
void fp8_gemm_simple(const Fp8GemmArgs& a);

// Times GPU work with CUDA events on the default stream.
class EventTimer {
 public:
  EventTimer();
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start();
  float stop_ms();  // waits for the work since start()

 private:
  void* begin_ = nullptr;
  void* end_ = nullptr;
};

}  // namespace dsv3::cuda
