// Query x key tiling shared by the CPU spatial kernels (spatial_cpu.cpp: combine="product",
// joint_cpu.cpp: combine="joint").
//
// Each thread owns three score tiles of at most tile_budget_bytes() (16 MiB) in all:
// nothing N x N is ever allocated.  While a whole strip of query rows (all N keys) fits
// the budget, a tile is that strip (one GEMM call per product, and a second pass can
// reuse the scores of the first); beyond it the tiles stream over key blocks.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "cpu/tile_gemm.h"

namespace ggnet::cpu {

constexpr int64_t kBQ = 64;     // queries per tile of the forward
constexpr int64_t kBQB = 128;   // queries per tile of the backward (while its strip fits)
constexpr int64_t kGroups = 4;  // query groups of the backward (fixed: deterministic sums)

// Bytes of score tiles each thread may hold (three tiles).  GGNET_CPU_TILE_BYTES
// overrides it (tests use a small value to exercise the streaming path at small N).
inline int64_t tile_budget_bytes() {
  static const int64_t fallback = int64_t(16) << 20;
  const char* env = std::getenv("GGNET_CPU_TILE_BYTES");
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  TORCH_CHECK_VALUE(end != env && *end == '\0' && v > 0,
                    "GGNET_CPU_TILE_BYTES must be a positive number of bytes, got '", env, "'");
  return static_cast<int64_t>(v);
}

// Tile length along the streamed dimension: everything if it fits, else a multiple of 16.
inline int64_t tile_len(int64_t n, int64_t other, int64_t elem_size) {
  const int64_t fit = tile_budget_bytes() / (3 * other * elem_size);
  if (fit >= n) return n;
  return std::max<int64_t>(16, fit / 16 * 16);
}

// Rows of the backward's query blocks: kBQB while their strip fits the tile budget, else
// kBQ (strips up to the forward's limit, then streaming over key tiles).
inline int64_t backward_rows(int64_t n, int64_t elem_size) {
  const bool wide = 3 * kBQB * n * elem_size <= tile_budget_bytes();
  return std::min(wide ? kBQB : kBQ, n);
}

struct Blocks {
  int64_t n, bq, bk, nqb, nkb;
  Blocks(int64_t n_, int64_t bq_, int64_t bk_)
      : n(n_), bq(bq_), bk(bk_), nqb((n_ + bq_ - 1) / bq_), nkb((n_ + bk_ - 1) / bk_) {}
  int64_t q0(int64_t qb) const { return qb * bq; }
  int64_t nq(int64_t qb) const { return std::min(bq, n - qb * bq); }
  int64_t k0(int64_t kb) const { return kb * bk; }
  int64_t nk(int64_t kb) const { return std::min(bk, n - kb * bk); }
};

// A row-major [rows, cols] view of thread-local scratch.
inline at::Tensor tile_view(const at::Tensor& scratch, int64_t rows, int64_t cols) {
  return scratch.narrow(0, 0, rows * cols).view({rows, cols});
}

// out = x[q0:q0+nq] @ y[k0:k0+nk]^T  (scores of one tile)
inline void scores(const TileGemm& gemm, at::Tensor& out, const at::Tensor& x, const at::Tensor& y,
                   int64_t q0, int64_t nq, int64_t k0, int64_t nk) {
  gemm(out, x.narrow(0, q0, nq), y.narrow(0, k0, nk).t(), /*accumulate=*/false);
}

inline at::Tensor to_acc(const at::Tensor& x, at::ScalarType acc) { return x.to(acc).contiguous(); }

}  // namespace ggnet::cpu
