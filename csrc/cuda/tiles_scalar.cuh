// Block-level tile routines of the scalar float32-FMA spatial kernels
// (spatial_fwd_scalar.cu, spatial_bwd_scalar.cu).
//
// One thread block = 256 threads works on a 64 x 64 tile of (query i, key j) pairs.
// Thread t (tx = t % 16, ty = t / 16) owns the 4 x 4 micro-tile of rows ty + 16 r and
// columns tx + 16 c (r, c < 4); the 16 threads of one row group are 16 consecutive lanes
// of one warp, so row reductions are 4 xor-shuffles (lane_sum<16>, lse_merge_lanes<16>
// of common.cuh).  Operands are staged in shared memory as float32 whatever the input
// dtype, so every product accumulates in float32.  Out-of-range rows/columns are loaded
// as 0 (never read out of bounds) and callers mask the element-wise results, so any N,
// d, dg, C work.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

namespace ggnet::cuda::scalar {

constexpr int kThreads = 256;
constexpr int kTile = 64;   // rows and columns of a score tile
constexpr int kChunk = 16;  // feature-dimension chunk of the score product
constexpr int kMicro = 4;   // micro-tile side

using Micro = float[kMicro][kMicro];

struct Smem {
  float a[kChunk][kTile + 1];  // score product: A chunk, transposed
  float b[kChunk][kTile + 1];  // score product: B chunk, transposed
  float w[kTile][kTile + 1];   // element-wise weights of the current tile (i, j)
  float x[kTile][kTile];       // value chunk of the accumulation product
};
// 2 * 16 * 65 * 4 + 64 * 65 * 4 + 64 * 64 * 4 = 41344 bytes of static shared memory.

__device__ __forceinline__ int lane_tx() { return threadIdx.x & 15; }
__device__ __forceinline__ int lane_ty() { return threadIdx.x >> 4; }

__device__ __forceinline__ void micro_zero(Micro& acc) {
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int c = 0; c < kMicro; ++c) acc[r][c] = 0.f;
}

// acc[r][c] += u[r] * v[c]: one step of a micro-tile product.
__device__ __forceinline__ void micro_fma(Micro& acc, const float (&u)[kMicro],
                                          const float (&v)[kMicro]) {
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int c = 0; c < kMicro; ++c) acc[r][c] = fmaf(u[r], v[c], acc[r][c]);
}

// acc[r][c] = sum_k A[a0 + ty + 16 r, k] * Bm[b0 + tx + 16 c, k], k < K.
// A and Bm are row-major [n, K] (one batch element).  Ends with __syncthreads.
template <typename TA, typename TB>
__device__ __forceinline__ void tile_scores(Smem& sm, const TA* __restrict__ A, int64_t a0,
                                            const TB* __restrict__ Bm, int64_t b0, int64_t n,
                                            int64_t K, Micro& acc) {
  const int tx = lane_tx(), ty = lane_ty();
  micro_zero(acc);
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    for (int idx = threadIdx.x; idx < kTile * kChunk; idx += kThreads) {
      const int m = idx / kChunk, kk = idx % kChunk;
      const int64_t col = k0 + kk;
      const int64_t ra = a0 + m, rb = b0 + m;
      sm.a[kk][m] = (ra < n && col < K) ? to_float(A[ra * K + col]) : 0.f;
      sm.b[kk][m] = (rb < n && col < K) ? to_float(Bm[rb * K + col]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kChunk; ++kk) {
      float av[kMicro], bv[kMicro];
#pragma unroll
      for (int r = 0; r < kMicro; ++r) av[r] = sm.a[kk][ty + 16 * r];
#pragma unroll
      for (int c = 0; c < kMicro; ++c) bv[c] = sm.b[kk][tx + 16 * c];
      micro_fma(acc, av, bv);
    }
    __syncthreads();
  }
}

// The two score tiles of rows i0.. and keys j0..: a = theta phi^T, bb = eta rho^T.
template <typename T>
__device__ __forceinline__ void tile_pair_scores(Smem& sm, const BatchInputs<T>& in, int64_t i0,
                                                 int64_t j0, const SpatialSizes& sz, Micro& a,
                                                 Micro& bb) {
  tile_scores(sm, in.theta, i0, in.phi, j0, sz.n, sz.d, a);
  tile_scores(sm, in.eta, i0, in.rho, j0, sz.n, sz.dg, bb);
}

// sm.w[ty + 16 r][tx + 16 c] = v[r][c], then __syncthreads.
__device__ __forceinline__ void store_w(Smem& sm, const Micro& v) {
  const int tx = lane_tx(), ty = lane_ty();
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int cc = 0; cc < kMicro; ++cc) sm.w[ty + 16 * r][tx + 16 * cc] = v[r][cc];
  __syncthreads();
}

// out[out0 + r, :] += sum_k W(r, k) * X[x0 + k, :] over k < 64, where
// W(r, k) = sm.w[r][k] (kTrans = false) or sm.w[k][r] (kTrans = true).
// out is float32 row-major [n, ncols]; X is row-major [n, ncols].  The caller has filled
// sm.w (zero outside the valid rows/columns) and synchronised.  Each thread updates the
// same fixed set of out elements on every call (rows ty + 16 r, columns c0 + tx + 16 c),
// and the block owns rows out0 .. out0 + 63 exclusively: no atomics.  Ends with
// __syncthreads.
template <bool kTrans, typename TX>
__device__ __forceinline__ void tile_accumulate(Smem& sm, float* __restrict__ out, int64_t out0,
                                                const TX* __restrict__ X, int64_t x0, int64_t n,
                                                int64_t ncols) {
  const int tx = lane_tx(), ty = lane_ty();
  for (int64_t c0 = 0; c0 < ncols; c0 += kTile) {
    for (int idx = threadIdx.x; idx < kTile * kTile; idx += kThreads) {
      const int k = idx / kTile, cc = idx % kTile;
      const int64_t row = x0 + k, col = c0 + cc;
      sm.x[k][cc] = (row < n && col < ncols) ? to_float(X[row * ncols + col]) : 0.f;
    }
    __syncthreads();
    Micro acc;
    micro_zero(acc);
#pragma unroll 4
    for (int k = 0; k < kTile; ++k) {
      float wv[kMicro], xv[kMicro];
#pragma unroll
      for (int r = 0; r < kMicro; ++r) wv[r] = kTrans ? sm.w[k][ty + 16 * r] : sm.w[ty + 16 * r][k];
#pragma unroll
      for (int c = 0; c < kMicro; ++c) xv[c] = sm.x[k][tx + 16 * c];
      micro_fma(acc, wv, xv);
    }
#pragma unroll
    for (int r = 0; r < kMicro; ++r) {
      const int64_t row = out0 + ty + 16 * r;
      if (row >= n) continue;
#pragma unroll
      for (int c = 0; c < kMicro; ++c) {
        const int64_t col = c0 + tx + 16 * c;
        if (col < ncols) out[row * ncols + col] += acc[r][c];
      }
    }
    __syncthreads();
  }
}

}  // namespace ggnet::cuda::scalar
