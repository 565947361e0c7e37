// Row-independent GEMM (see rowwise_gemm.h). Register tiles of R rows × C columns, each element accumulated
// in its own vector register over the full K (no K-blocking: the order per element is exactly simd::dot).
#include "infer/rowwise_gemm.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "infer/simd.h"

namespace dsv3::infer {

namespace {

using simd::kLanes;
using simd::Vec;

// C[r, c] (r < R, c < C) = dot(A row r, B row c) over K.
template <int R, int C>
void micro(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* Cm, int64_t ldc,
           bool accumulate) {
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = simd::zero();
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    Vec a[R];
    for (int r = 0; r < R; ++r) a[r] = simd::load(A + r * lda + k);
    for (int c = 0; c < C; ++c) {
      const Vec b = simd::load(B + c * ldb + k);
      for (int r = 0; r < R; ++r) acc[r][c] = simd::fma(a[r], b, acc[r][c]);
      // Few rows (decode): memory-bound on B, so fetch the rows of the next column group ahead.
      if constexpr (R <= 2) __builtin_prefetch(B + (c + C) * ldb + k, 0, 3);
    }
  }
  if (k < K) {
    const int n = int(K - k);
    Vec a[R];
    for (int r = 0; r < R; ++r) a[r] = simd::load_partial(A + r * lda + k, n);
    for (int c = 0; c < C; ++c) {
      const Vec b = simd::load_partial(B + c * ldb + k, n);
      for (int r = 0; r < R; ++r) acc[r][c] = simd::fma(a[r], b, acc[r][c]);
    }
  }
  // Reduce the lanes: 8+ accumulators together through hsum16 (bit-identical to one hsum each).
  float sums[16];
  if constexpr (R * C >= 8 && R * C <= 16) {
    Vec all[16];
    for (int i = 0; i < 16; ++i) all[i] = i < R * C ? acc[i / C][i % C] : simd::zero();
    simd::hsum16(all, sums);
  } else {
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sums[r * C + c] = simd::hsum(acc[r][c]);
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float* out = Cm + r * ldc + c;
      *out = accumulate ? *out + sums[r * C + c] : sums[r * C + c];
    }
}

// Column-tile width per row-tile height: 16 vector accumulators at most (AVX-512 has 32 registers).
constexpr int kWideC = kLanes == 16 ? 8 : 4;

template <int R>
void row_block(const GemmNT& p, int64_t m0, int64_t n0, int64_t n1) {
  constexpr int C = R <= 2 ? kWideC : 4;
  const float* A = p.A + m0 * p.lda;
  float* Cm = p.C + m0 * p.ldc;
  int64_t n = n0;
  for (; n + C <= n1; n += C) micro<R, C>(p.K, A, p.lda, p.B + n * p.ldb, p.ldb, Cm + n, p.ldc, p.accumulate);
  for (; n < n1; ++n) micro<R, 1>(p.K, A, p.lda, p.B + n * p.ldb, p.ldb, Cm + n, p.ldc, p.accumulate);
}

// Rows [0, M) × columns [n0, n1) of one problem.
void tile(const GemmNT& p, int64_t n0, int64_t n1) {
  int64_t m = 0;
  for (; m + 4 <= p.M; m += 4) row_block<4>(p, m, n0, n1);
  switch (p.M - m) {
    case 3: row_block<3>(p, m, n0, n1); break;
    case 2: row_block<2>(p, m, n0, n1); break;
    case 1: row_block<1>(p, m, n0, n1); break;
    default: break;
  }
}

constexpr int64_t kTileN = 64;

struct WorkItem {
  int32_t problem;
  int64_t n0, n1;
};

}  // namespace

void gemm_nt_rowwise_serial(const GemmNT& p) {
  if (p.M <= 0 || p.N <= 0) return;
  tile(p, 0, p.N);
}

void gemm_nt_rowwise_grouped(std::span<const GemmNT> problems) {
  // Work items: column tiles of each problem. Small jobs run on the calling thread (same numbers either way).
  int64_t n_items = 0;
  double flops = 0;
  for (const GemmNT& p : problems) {
    if (p.M <= 0 || p.N <= 0) continue;
    n_items += (p.N + kTileN - 1) / kTileN;
    flops += double(p.M) * double(p.N) * double(p.K);
  }
  if (n_items == 0) return;
  thread_local std::vector<WorkItem> items;  // reused: no allocation once warm
  items.clear();
  for (size_t i = 0; i < problems.size(); ++i) {
    const GemmNT& p = problems[i];
    if (p.M <= 0 || p.N <= 0) continue;
    for (int64_t n0 = 0; n0 < p.N; n0 += kTileN) items.push_back({int32_t(i), n0, std::min(p.N, n0 + kTileN)});
  }
  // A raw pointer into the calling thread's list (a thread_local named inside the region would be each
  // thread's own, empty, copy).
  const WorkItem* list = items.data();
  const GemmNT* probs = problems.data();
  // Below ~0.5 M multiply-adds a fork/join costs more than it saves (and much more on a busy machine).
  const bool parallel = flops > 5.0e5 && n_items > 1 && omp_get_max_threads() > 1;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t i = 0; i < n_items; ++i) {
    const WorkItem& w = list[i];
    tile(probs[w.problem], w.n0, w.n1);
  }
}

void gemm_nt_rowwise(const GemmNT& p) { gemm_nt_rowwise_grouped(std::span<const GemmNT>(&p, 1)); }

}  // namespace dsv3::infer
