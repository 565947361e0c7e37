// FP8 recipe on the GPU: tile quantizers, block-scaled GEMM (cuBLASLt + own kernel), BF16 baseline (fp8_cuda.h).
#include "cuda/fp8_cuda.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <map>
#include <tuple>

#include "cuda/e4m3_rule.h"
#include "dsv3/error.h"

namespace dsv3::cuda {

namespace {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_(unknown)";
  }
}

}  // namespace

#define DSV3_CUDA_CHECK(call)                                                                           \
  do {                                                                                                  \
    const cudaError_t e_ = (call);                                                                      \
    DSV3_CHECK(e_ == cudaSuccess, #call " failed: ", cudaGetErrorName(e_), " (", cudaGetErrorString(e_), ")"); \
  } while (0)
#define DSV3_CUBLAS_CHECK(call)                                                              \
  do {                                                                                       \
    const cublasStatus_t s_ = (call);                                                        \
    DSV3_CHECK(s_ == CUBLAS_STATUS_SUCCESS, #call " failed: ", cublas_status_name(s_));     \
  } while (0)
#define DSV3_CUDA_CHECK_LAUNCH(name) DSV3_CUDA_CHECK((void(name), cudaGetLastError()))

// ---- device, memory, timing ----

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return n > 0;
}

std::string device_summary() {
  cudaDeviceProp p{};
  DSV3_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  int clock_khz = 0, mem_clock_khz = 0;
  (void)cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  (void)cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, 0);
  (void)cudaGetLastError();
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  int lt = int(cublasLtGetVersion());
  return detail::concat(p.name, ", sm_", p.major, p.minor, ", ", p.multiProcessorCount, " SMs, SM clock ",
                     clock_khz / 1000, " MHz, memory clock ", mem_clock_khz / 1000, " MHz, ",
                     p.totalGlobalMem >> 30, " GiB, L2 ", p.l2CacheSize >> 20, " MiB, driver ", driver,
                     ", runtime ", runtime, ", cuBLASLt ", lt);
}

void synchronize() { DSV3_CUDA_CHECK(cudaDeviceSynchronize()); }

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes) DSV3_CUDA_CHECK(cudaMalloc(&p_, bytes));
}
DeviceBuffer::~DeviceBuffer() {
  if (p_) (void)cudaFree(p_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) {
  o.p_ = nullptr;
  o.bytes_ = 0;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) (void)cudaFree(p_);
    p_ = o.p_;
    bytes_ = o.bytes_;
    o.p_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}
void DeviceBuffer::upload(const void* host, size_t bytes) {
  DSV3_CHECK(bytes <= bytes_, "DeviceBuffer::upload: ", bytes, " bytes into a buffer of ", bytes_);
  if (bytes) DSV3_CUDA_CHECK(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice));
}
void DeviceBuffer::download(void* host, size_t bytes) const {
  DSV3_CHECK(bytes <= bytes_, "DeviceBuffer::download: ", bytes, " bytes from a buffer of ", bytes_);
  if (bytes) DSV3_CUDA_CHECK(cudaMemcpy(host, p_, bytes, cudaMemcpyDeviceToHost));
}
void DeviceBuffer::fill_bytes(uint8_t value) {
  if (bytes_) DSV3_CUDA_CHECK(cudaMemset(p_, value, bytes_));
}

EventTimer::EventTimer() {
  cudaEvent_t b, e;
  DSV3_CUDA_CHECK(cudaEventCreate(&b));
  DSV3_CUDA_CHECK(cudaEventCreate(&e));
  begin_ = b;
  end_ = e;
}
EventTimer::~EventTimer() {
  (void)cudaEventDestroy(static_cast<cudaEvent_t>(begin_));
  (void)cudaEventDestroy(static_cast<cudaEvent_t>(end_));
}
void EventTimer::start() { DSV3_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(begin_))); }
float EventTimer::stop_ms() {
  DSV3_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(end_)));
  DSV3_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(end_)));
  float ms = 0.0f;
  DSV3_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(begin_), static_cast<cudaEvent_t>(end_)));
  return ms;
}

// ---- E4M3 on the device ----

namespace {

constexpr uint32_t kNanBits = 0x7fc00000u;  // std::nanf("") on the host: the scale of a non-finite tile

// fp8::tile_scale: max(amax, 1e-4)/448 as a correctly rounded f32 division (nvcc's default -prec-div=true),
// rounded up to a power of two in kPow2 mode; NaN for a non-finite tile.
__device__ float tile_scale_dev(float amax, bool finite, bool pow2) {
  if (!finite) return __uint_as_float(kNanBits);
  const float s = __fdiv_rn(fmaxf(amax, fp8::kAmaxFloor), 448.0f);
  if (!pow2) return s;
  uint32_t u = __float_as_uint(s);
  if (u & 0x7fffffu) u = (u & 0xff800000u) + 0x800000u;
  return __uint_as_float(u & 0xff800000u);
}

// The E4M3 code of x/scale: cuda/e4m3_rule.h (f32 only; equal to the CPU rule, tests/cuda/test_e4m3_rule.cpp).
// (A double division per element instead measured the same 1.5 TB/s for the 1×128 quantizer on an H200.)
__device__ __forceinline__ uint8_t e4m3_of_quotient_dev(float x, float scale) { return e4m3_of_quotient_f32(x, scale); }

__device__ float e4m3_decode(uint32_t c) {
  const uint32_t e = (c >> 3) & 15u, m = c & 7u;
  float v;
  if (e == 15u && m == 7u) v = __uint_as_float(kNanBits);
  else if (e == 0u) v = float(m) * 0x1p-9f;
  else v = __uint_as_float(((e + 120u) << 23) | (m << 20));  // (1 + m/8)·2^(e-7)
  return (c & 0x80u) ? -v : v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Tiles of one row (tile_rows == 1): one warp per tile.
__global__ void quantize_row_tiles_kernel(QuantizeArgs a, int64_t ntc, int64_t ntiles, bool pow2) {
  const int64_t tile = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (tile >= ntiles) return;  // whole warps leave together
  const int64_t r = tile / ntc, tc = tile % ntc;
  const int64_t c0 = tc * a.tile_cols, c1 = min(a.cols, c0 + a.tile_cols);
  const float* x = a.x_dev + r * a.ldx;
  float amax = 0.0f;
  bool finite = true;
  for (int64_t c = c0 + lane; c < c1; c += 32) {
    const float v = fabsf(x[c]);
    finite &= v <= FLT_MAX;
    amax = fmaxf(amax, v);
  }
  amax = warp_max(amax);
  finite = __all_sync(0xffffffffu, finite);
  const float scale = tile_scale_dev(amax, finite, pow2);
  if (lane == 0) a.scales_dev[r * a.layout.tile_row_stride + tc * a.layout.tile_col_stride] = scale;
  uint8_t* codes = a.codes_dev + r * a.ldc;
  for (int64_t c = c0 + lane; c < c1; c += 32) codes[c] = finite ? e4m3_of_quotient_dev(x[c], scale) : 0x7f;
}

// 1×128 tiles of full width (cols % 128 == 0, rows and pointers 16-byte aligned): each warp takes
// kVecTilesPerWarp consecutive tiles and issues all their loads before the first use (4 × 16 bytes in flight per
// lane instead of one: a single tile per warp measured 1.5 TB/s on an H200 against ~4.3 TB/s of copy bandwidth);
// each lane keeps 4 consecutive floats of a tile in registers and stores their 4 codes as one word.
constexpr int kVecTilesPerWarp = 4;
__global__ void quantize_1x128_vec_kernel(QuantizeArgs a, int64_t ntc, int64_t ntiles, bool pow2) {
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32 * kVecTilesPerWarp;
  const int lane = threadIdx.x & 31;
  if (first >= ntiles) return;  // whole warps leave together
  // (row, tile column) of each of the warp's tiles: one division for the first, then steps (a 64-bit division
  // per tile per lane is a long software sequence on the GPU).
  int64_t row[kVecTilesPerWarp], col[kVecTilesPerWarp];
  row[0] = first / ntc;
  col[0] = first - row[0] * ntc;
#pragma unroll
  for (int i = 1; i < kVecTilesPerWarp; ++i) {
    const bool wrap = col[i - 1] + 1 == ntc;
    row[i] = row[i - 1] + (wrap ? 1 : 0);
    col[i] = wrap ? 0 : col[i - 1] + 1;
  }
  float4 v[kVecTilesPerWarp];
#pragma unroll
  for (int i = 0; i < kVecTilesPerWarp; ++i)
    if (first + i < ntiles)  // the same for the whole warp
      v[i] = __ldcs(reinterpret_cast<const float4*>(a.x_dev + row[i] * a.ldx + col[i] * 128 + lane * 4));  // read once
#pragma unroll
  for (int i = 0; i < kVecTilesPerWarp; ++i) {
    if (first + i >= ntiles) break;
    const int64_t r = row[i], c = col[i] * 128 + lane * 4;
    const float4 x = v[i];
    const float m4 = fmaxf(fmaxf(fabsf(x.x), fabsf(x.y)), fmaxf(fabsf(x.z), fabsf(x.w)));
    const bool finite =
        fabsf(x.x) <= FLT_MAX && fabsf(x.y) <= FLT_MAX && fabsf(x.z) <= FLT_MAX && fabsf(x.w) <= FLT_MAX;
    const float amax = warp_max(finite ? m4 : 0.0f);
    const bool all_finite = __all_sync(0xffffffffu, finite);
    const float scale = tile_scale_dev(amax, all_finite, pow2);
    if (lane == 0) a.scales_dev[r * a.layout.tile_row_stride + (c / 128) * a.layout.tile_col_stride] = scale;
    uint32_t word = 0x7f7f7f7fu;
    if (all_finite)
      word = uint32_t(e4m3_of_quotient_dev(x.x, scale)) | uint32_t(e4m3_of_quotient_dev(x.y, scale)) << 8 |
             uint32_t(e4m3_of_quotient_dev(x.z, scale)) << 16 | uint32_t(e4m3_of_quotient_dev(x.w, scale)) << 24;
    *reinterpret_cast<uint32_t*>(a.codes_dev + r * a.ldc + c) = word;
  }
}

// Any tile shape: one block of 256 threads per tile.
__global__ void quantize_block_tiles_kernel(QuantizeArgs a, int64_t ntc, bool pow2) {
  const int64_t tr = blockIdx.y, tc = blockIdx.x;
  const int64_t r0 = tr * a.tile_rows, r1 = min(a.rows, r0 + a.tile_rows);
  const int64_t c0 = tc * a.tile_cols, c1 = min(a.cols, c0 + a.tile_cols);
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  // Warp w walks rows r0 + w, r0 + w + nwarps, ...; its lanes walk the tile's columns (coalesced for wide tiles).
  float amax = 0.0f;
  bool finite = true;
  for (int64_t r = r0 + warp; r < r1; r += nwarps)
    for (int64_t c = c0 + lane; c < c1; c += 32) {
      const float v = fabsf(a.x_dev[r * a.ldx + c]);
      finite &= v <= FLT_MAX;
      amax = fmaxf(amax, v);
    }
  __shared__ float s_max[32];
  __shared__ int s_finite[32];
  amax = warp_max(amax);
  const int all_finite = __all_sync(0xffffffffu, finite);
  if (lane == 0) {
    s_max[warp] = amax;
    s_finite[warp] = all_finite;
  }
  __syncthreads();
  amax = 0.0f;
  finite = true;
  for (int i = 0; i < nwarps; ++i) {
    amax = fmaxf(amax, s_max[i]);
    finite &= s_finite[i] != 0;
  }
  const float scale = tile_scale_dev(amax, finite, pow2);
  if (threadIdx.x == 0) a.scales_dev[tr * a.layout.tile_row_stride + tc * a.layout.tile_col_stride] = scale;
  for (int64_t r = r0 + warp; r < r1; r += nwarps)
    for (int64_t c = c0 + lane; c < c1; c += 32)
      a.codes_dev[r * a.ldc + c] = finite ? e4m3_of_quotient_dev(a.x_dev[r * a.ldx + c], scale) : 0x7f;
}

}  // namespace

void quantize_tiles(const QuantizeArgs& a) {
  DSV3_CHECK(a.rows >= 0 && a.cols >= 0 && a.tile_rows > 0 && a.tile_cols > 0 && a.ldx >= a.cols &&
                 a.ldc >= a.cols,
             "cuda::quantize_tiles: bad shape rows=", a.rows, " cols=", a.cols, " ldx=", a.ldx, " ldc=", a.ldc,
             " tile=", a.tile_rows, "x", a.tile_cols);
  if (a.rows == 0 || a.cols == 0) return;
  DSV3_CHECK(a.x_dev && a.codes_dev && a.scales_dev, "cuda::quantize_tiles: null pointer");
  const int64_t ntr = (a.rows + a.tile_rows - 1) / a.tile_rows, ntc = (a.cols + a.tile_cols - 1) / a.tile_cols;
  const bool pow2 = a.mode == fp8::ScaleMode::kPow2;
  if (a.tile_rows == 1) {
    const int64_t ntiles = ntr * ntc, threads = 256, blocks = (ntiles * 32 + threads - 1) / threads;
    DSV3_CHECK(blocks < (int64_t(1) << 31), "cuda::quantize_tiles: too many tiles (", ntiles, ")");
    const bool vec = a.tile_cols == 128 && a.cols % 128 == 0 && a.ldx % 4 == 0 && a.ldc % 4 == 0 &&
                     (reinterpret_cast<uintptr_t>(a.x_dev) | reinterpret_cast<uintptr_t>(a.codes_dev)) % 16 == 0;
    const int64_t vec_blocks = ((ntiles + kVecTilesPerWarp - 1) / kVecTilesPerWarp * 32 + threads - 1) / threads;
    if (vec)
      DSV3_CUDA_CHECK_LAUNCH(
          (quantize_1x128_vec_kernel<<<unsigned(vec_blocks), unsigned(threads)>>>(a, ntc, ntiles, pow2)));
    else
      DSV3_CUDA_CHECK_LAUNCH((quantize_row_tiles_kernel<<<unsigned(blocks), unsigned(threads)>>>(a, ntc, ntiles, pow2)));
  } else {
    DSV3_CHECK(ntr < 65536 && ntc < (int64_t(1) << 31), "cuda::quantize_tiles: too many tiles (", ntr, "x", ntc, ")");
    const dim3 grid{unsigned(ntc), unsigned(ntr)};
    DSV3_CUDA_CHECK_LAUNCH((quantize_block_tiles_kernel<<<grid, 256>>>(a, ntc, pow2)));
  }
}

void quantize_activations(const float* x_dev, int64_t M, int64_t K, int64_t ldx, fp8::ScaleMode mode,
                          uint8_t* codes_dev, float* sx_dev) {
  QuantizeArgs q;
  q.x_dev = x_dev, q.rows = M, q.cols = K, q.ldx = ldx, q.tile_rows = 1, q.tile_cols = fp8::kTile, q.mode = mode;
  q.codes_dev = codes_dev, q.ldc = K, q.scales_dev = sx_dev, q.layout = activation_scale_layout(M);
  quantize_tiles(q);
}

void quantize_weights(const float* w_dev, int64_t N, int64_t K, int64_t ldw, fp8::ScaleMode mode,
                      uint8_t* codes_dev, float* sw_dev) {
  QuantizeArgs q;
  q.x_dev = w_dev, q.rows = N, q.cols = K, q.ldx = ldw, q.tile_rows = fp8::kTile, q.tile_cols = fp8::kTile;
  q.mode = mode, q.codes_dev = codes_dev, q.ldc = K, q.scales_dev = sw_dev, q.layout = weight_scale_layout(K);
  // The padding columns of sw (kb >= ceil(K/128)) are never read; zero them so the buffer is fully defined.
  if (weight_scale_ld(K) != k_blocks(K))
    DSV3_CUDA_CHECK(cudaMemset(sw_dev, 0, size_t(weight_scale_count(N, K)) * sizeof(float)));
  quantize_tiles(q);
}

// ---- element-wise helpers ----

namespace {

__global__ void f32_to_bf16_kernel(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t u = __float_as_uint(src[i]);
    if ((u & 0x7fffffffu) > 0x7f800000u) dst[i] = uint16_t((u >> 16) | 0x40u);
    else dst[i] = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {  // splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void fill_random_kernel(float* dst, int64_t rows, int64_t cols, uint64_t seed, int spread) {
  const int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols;
    const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + uint64_t(i));
    const uint64_t hr = mix64(seed ^ (uint64_t(r) * 0xd1b54a32d192ed03ull));
    const int e = spread > 0 ? int(hr % uint64_t(2 * spread + 1)) - spread : 0;
    const float u = float(int64_t(h >> 40) - (int64_t(1) << 23)) * 0x1p-23f;  // [-1, 1)
    dst[i] = ldexpf(u, e);
  }
}

unsigned grid_for(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 65535 * 8)); }

}  // namespace

void convert_f32_to_bf16(const float* src_dev, uint16_t* dst_dev, int64_t n) {
  if (n <= 0) return;
  DSV3_CUDA_CHECK_LAUNCH((f32_to_bf16_kernel<<<grid_for(n), 256>>>(src_dev, dst_dev, n)));
}

void fill_random(float* dst_dev, int64_t rows, int64_t cols, uint64_t seed, int spread) {
  if (rows * cols <= 0) return;
  DSV3_CHECK(spread >= 0 && spread < 60, "cuda::fill_random: spread must be in [0, 60), got ", spread);
  DSV3_CUDA_CHECK_LAUNCH((fill_random_kernel<<<grid_for(rows * cols), 256>>>(dst_dev, rows, cols, seed, spread)));
}

const char* path_name(GemmPath p) {
  switch (p) {
    case GemmPath::kAuto: return "auto";
    case GemmPath::kCublasLt: return "cublaslt";
    case GemmPath::kOwnKernel: return "own-kernel";
  }
  return "?";
}

// ---- the own block-scaled kernel ----

namespace {

constexpr int kSimpleTile = 16;  // 16×16 outputs per block, one per thread

// Each thread owns Y[m, n]. Per K block, the block stages 16 rows of X and 16 rows of W (decoded to f32) in
// shared memory; each thread sums its 128 products in order, then promotes with the block's scales. __fmul_rn /
// __fadd_rn keep every operation separately rounded (no FMA contraction), as the host reference computes.
template <typename OutT>
__global__ void fp8_gemm_simple_kernel(Fp8GemmArgs a, int64_t KB, int64_t swld) {
  __shared__ float xs[kSimpleTile][fp8::kTile + 1];
  __shared__ float ws[kSimpleTile][fp8::kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kSimpleTile + tx;
  const int64_t m0 = int64_t(blockIdx.y) * kSimpleTile, n0 = int64_t(blockIdx.x) * kSimpleTile;
  const int64_t m = m0 + ty, n = n0 + tx;
  float total = 0.0f;
  for (int64_t kb = 0; kb < KB; ++kb) {
    const int64_t k0 = kb * fp8::kTile;
    const int kn = int(min(int64_t(fp8::kTile), a.K - k0));
    __syncthreads();
    for (int i = tid; i < kSimpleTile * fp8::kTile; i += kSimpleTile * kSimpleTile) {
      const int r = i / fp8::kTile, k = i % fp8::kTile;
      const bool kin = k < kn;
      xs[r][k] = (kin && m0 + r < a.M) ? e4m3_decode(a.x_dev[(m0 + r) * a.ldx + k0 + k]) : 0.0f;
      ws[r][k] = (kin && n0 + r < a.N) ? e4m3_decode(a.w_dev[(n0 + r) * a.ldw + k0 + k]) : 0.0f;
    }
    __syncthreads();
    if (m < a.M && n < a.N) {
      float partial = 0.0f;
      for (int k = 0; k < kn; ++k) partial = __fadd_rn(partial, __fmul_rn(xs[ty][k], ws[tx][k]));
      const float s = __fmul_rn(a.sx_dev[kb * a.M + m], a.sw_dev[(n / fp8::kTile) * swld + kb]);
      total = __fadd_rn(total, __fmul_rn(partial, s));
    }
  }
  if (m < a.M && n < a.N) {
    OutT* y = static_cast<OutT*>(a.y_dev);
    if constexpr (sizeof(OutT) == 4) {
      y[m * a.ldy + n] = total;
    } else {
      const uint32_t u = __float_as_uint(total);
      y[m * a.ldy + n] = (u & 0x7fffffffu) > 0x7f800000u ? uint16_t((u >> 16) | 0x40u)
                                                          : uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
  }
}

void check_fp8_args(const Fp8GemmArgs& a) {
  DSV3_CHECK(a.M >= 0 && a.N >= 0 && a.K >= 0, "cuda::fp8_gemm: negative shape M=", a.M, " N=", a.N, " K=", a.K);
  DSV3_CHECK(a.ldx >= a.K && a.ldw >= a.K && a.ldy >= a.N, "cuda::fp8_gemm: stride below row length (ldx=", a.ldx,
             " ldw=", a.ldw, " ldy=", a.ldy, " for M=", a.M, " N=", a.N, " K=", a.K, ")");
  DSV3_CHECK(a.M * a.N == 0 || (a.y_dev && (a.K == 0 || (a.x_dev && a.sx_dev && a.w_dev && a.sw_dev))),
             "cuda::fp8_gemm: null pointer");
}

}  // namespace

void fp8_gemm_simple(const Fp8GemmArgs& a) {
  check_fp8_args(a);
  if (a.M == 0 || a.N == 0) return;
  DSV3_CHECK((a.M + kSimpleTile - 1) / kSimpleTile < 65536, "cuda::fp8_gemm_simple: M too large (", a.M, ")");
  const dim3 grid{unsigned((a.N + kSimpleTile - 1) / kSimpleTile), unsigned((a.M + kSimpleTile - 1) / kSimpleTile)};
  const dim3 block{kSimpleTile, kSimpleTile};
  const int64_t KB = k_blocks(a.K), swld = weight_scale_ld(a.K);
  if (a.out == OutType::kF32) DSV3_CUDA_CHECK_LAUNCH((fp8_gemm_simple_kernel<float><<<grid, block>>>(a, KB, swld)));
  else DSV3_CUDA_CHECK_LAUNCH((fp8_gemm_simple_kernel<uint16_t><<<grid, block>>>(a, KB, swld)));
}

// ---- cuBLASLt ----
//
// cuBLASLt is column-major. Row-major Y[M,N] = X[M,K]·W[N,K]ᵀ is, column-major, Yᵀ (N×M) = W'ᵀ·X' where
// W' = the row-major W read as a K×N column-major matrix (ld = ldw) and X' the K×M one (ld = ldx): the "TN"
// form (A = W with TRANSA = T, B = X with TRANSB = N) that FP8 on Hopper requires, both operands K-major.
// Scales: A = W per 128×128 block (BLK128x128_32F), B = X per 1×128 along K (VEC128_32F); see fp8_cuda.h.

struct GemmContext::Impl {
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
    std::string why;  // when !ok
  };
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int>;

  cublasLtHandle_t lt = nullptr;
  DeviceBuffer workspace{size_t(64) << 20};
  std::map<Key, Plan> plans;

  ~Impl() {
    for (auto& [k, p] : plans) destroy(p);
    if (lt) (void)cublasLtDestroy(lt);
  }
  static void destroy(Plan& p) {
    if (p.desc) (void)cublasLtMatmulDescDestroy(p.desc);
    if (p.a) (void)cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) (void)cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) (void)cublasLtMatrixLayoutDestroy(p.c);
    p = Plan{};
  }

  // fp8: operands E4M3 with block scales (the heuristic wants the scale pointers set; each call resets them);
  // otherwise BF16.
  Plan& plan(bool fp8, int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldw, int64_t ldy, OutType out,
             const float* sw = nullptr, const float* sx = nullptr) {
    const Key key{fp8 ? 1 : 0, M, N, K, ldx, ldw, ldy, int(out)};
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan& p = plans[key];
    const cudaDataType_t in_t = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    const cudaDataType_t out_t = out == OutType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
    const size_t in_size = fp8 ? 1 : 2, out_size = out == OutType::kF32 ? 4 : 2;
    // Alignment cuBLASLt needs for these types: K and every leading dimension a multiple of 16 bytes.
    if ((K * in_size) % 16 || (ldx * in_size) % 16 || (ldw * in_size) % 16 || (ldy * out_size) % 16) {
      p.why = detail::concat("K=", K, ", ldx=", ldx, ", ldw=", ldw, ", ldy=", ldy, " not 16-byte multiples");
      return p;
    }
    DSV3_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    DSV3_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    DSV3_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (fp8) {
      const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
      const int32_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
      DSV3_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)));
      DSV3_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)));
      set_scale_pointers(p, sw, sx);
    }
    DSV3_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, in_t, uint64_t(K), uint64_t(N), ldw));
    DSV3_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, in_t, uint64_t(K), uint64_t(M), ldx));
    DSV3_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, out_t, uint64_t(N), uint64_t(M), ldy));
    cublasLtMatmulPreference_t pref = nullptr;
    DSV3_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace.bytes();
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                             sizeof(ws));
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &count);
    (void)cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || count == 0) {
      std::string why = detail::concat("cublasLtMatmulAlgoGetHeuristic: ", cublas_status_name(st), ", ", count,
                                       " algorithms");
      destroy(p);
      p.why = why;
      return p;
    }
    p.algo = result.algo;
    p.ok = true;
    return p;
  }

  static void set_scale_pointers(Plan& p, const float* sw, const float* sx) {
    DSV3_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sw, sizeof(sw)));
    DSV3_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sx, sizeof(sx)));
  }

  void run(Plan& p, const void* w, const void* x, void* y, const float* sw, const float* sx) {
    if (sw) set_scale_pointers(p, sw, sx);
    const float alpha = 1.0f, beta = 0.0f;
    DSV3_CUBLAS_CHECK(cublasLtMatmul(lt, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                                     workspace.get(), workspace.bytes(), nullptr));
  }
};

GemmContext::GemmContext() : impl_(std::make_unique<Impl>()) { DSV3_CUBLAS_CHECK(cublasLtCreate(&impl_->lt)); }
GemmContext::~GemmContext() = default;

bool GemmContext::cublaslt_supports(const Fp8GemmArgs& a, std::string* why) {
  check_fp8_args(a);
  const auto& p = impl_->plan(true, a.M, a.N, a.K, a.ldx, a.ldw, a.ldy, a.out, a.sw_dev, a.sx_dev);
  if (!p.ok && why) *why = p.why;
  return p.ok;
}

GemmPath GemmContext::fp8_gemm(const Fp8GemmArgs& a, GemmPath path) {
  check_fp8_args(a);
  if (a.M == 0 || a.N == 0) return path == GemmPath::kOwnKernel ? path : GemmPath::kCublasLt;
  if (path != GemmPath::kOwnKernel && a.K > 0) {
    auto& p = impl_->plan(true, a.M, a.N, a.K, a.ldx, a.ldw, a.ldy, a.out, a.sw_dev, a.sx_dev);
    const bool aligned = (reinterpret_cast<uintptr_t>(a.x_dev) | reinterpret_cast<uintptr_t>(a.w_dev) |
                          reinterpret_cast<uintptr_t>(a.y_dev) | reinterpret_cast<uintptr_t>(a.sx_dev) |
                          reinterpret_cast<uintptr_t>(a.sw_dev)) % 16 == 0;
    if (p.ok && aligned) {
      impl_->run(p, a.w_dev, a.x_dev, a.y_dev, a.sw_dev, a.sx_dev);
      return GemmPath::kCublasLt;
    }
    DSV3_CHECK(path == GemmPath::kAuto, "cuda::fp8_gemm: cuBLASLt has no block-scaled FP8 GEMM for M=", a.M,
               " N=", a.N, " K=", a.K, ": ", aligned ? p.why : std::string("pointers not 16-byte aligned"));
  }
  fp8_gemm_simple(a);
  return GemmPath::kOwnKernel;
}

void GemmContext::bf16_gemm(const Bf16GemmArgs& a) {
  DSV3_CHECK(a.M >= 0 && a.N >= 0 && a.K >= 0 && a.ldx >= a.K && a.ldw >= a.K && a.ldy >= a.N,
             "cuda::bf16_gemm: bad shape M=", a.M, " N=", a.N, " K=", a.K, " ldx=", a.ldx, " ldw=", a.ldw,
             " ldy=", a.ldy);
  if (a.M == 0 || a.N == 0) return;
  auto& p = impl_->plan(false, a.M, a.N, a.K, a.ldx, a.ldw, a.ldy, a.out);
  DSV3_CHECK(p.ok, "cuda::bf16_gemm: cuBLASLt has no BF16 GEMM for M=", a.M, " N=", a.N, " K=", a.K, ": ", p.why);
  impl_->run(p, a.w_dev, a.x_dev, a.y_dev, nullptr, nullptr);
}

}  // namespace dsv3::cuda
