// Block-level tile routines shared by the spatial kernels (scalar float32 FMA path).
//
// One thread block = 256 threads works on a 64 x 64 tile of (query i, key j) pairs.
// Thread t (tx = t % 16, ty = t / 16) owns the 4 x 4 micro-tile of rows ty + 16 r and
// columns tx + 16 c (r, c < 4); the 16 threads of one row group are 16 consecutive lanes
// of one warp, so row reductions are 4 xor-shuffles.  Operands are staged in shared
// memory as float32 whatever the input dtype, so every product accumulates in float32.
// Out-of-range rows/columns are loaded as 0 (never read out of bounds) and callers mask
// the element-wise results, so any N, d, dg, C work.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ggnet::cuda::tiles {

constexpr int kThreads = 256;
constexpr int kTile = 64;   // rows and columns of a score tile
constexpr int kChunk = 16;  // feature-dimension chunk of the score product
constexpr int kMicro = 4;   // micro-tile side

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

struct Smem {
  float a[kChunk][kTile + 1];  // score product: A chunk, transposed
  float b[kChunk][kTile + 1];  // score product: B chunk, transposed
  float w[kTile][kTile + 1];   // element-wise weights of the current tile (i, j)
  float x[kTile][kTile];       // value chunk of the accumulation product
};
// 2 * 16 * 65 * 4 + 64 * 65 * 4 + 64 * 64 * 4 = 41344 bytes of static shared memory.

__device__ __forceinline__ int lane_tx() { return threadIdx.x & 15; }
__device__ __forceinline__ int lane_ty() { return threadIdx.x >> 4; }

// acc[r][c] = sum_k A[a0 + ty + 16 r, k] * Bm[b0 + tx + 16 c, k], k < K.
// A and Bm are row-major [n, K] (one batch element).  Ends with __syncthreads.
template <typename TA, typename TB>
__device__ __forceinline__ void tile_scores(Smem& sm, const TA* __restrict__ A, int64_t a0,
                                            const TB* __restrict__ Bm, int64_t b0, int64_t n,
                                            int64_t K, float (&acc)[kMicro][kMicro]) {
  const int tx = lane_tx(), ty = lane_ty();
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int c = 0; c < kMicro; ++c) acc[r][c] = 0.f;
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    for (int idx = threadIdx.x; idx < kTile * kChunk; idx += kThreads) {
      const int m = idx / kChunk, kk = idx % kChunk;
      const int64_t col = k0 + kk;
      const int64_t ra = a0 + m, rb = b0 + m;
      sm.a[kk][m] = (ra < n && col < K) ? to_f(A[ra * K + col]) : 0.f;
      sm.b[kk][m] = (rb < n && col < K) ? to_f(Bm[rb * K + col]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kChunk; ++kk) {
      float av[kMicro], bv[kMicro];
#pragma unroll
      for (int r = 0; r < kMicro; ++r) av[r] = sm.a[kk][ty + 16 * r];
#pragma unroll
      for (int c = 0; c < kMicro; ++c) bv[c] = sm.b[kk][tx + 16 * c];
#pragma unroll
      for (int r = 0; r < kMicro; ++r)
#pragma unroll
        for (int c = 0; c < kMicro; ++c) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
    }
    __syncthreads();
  }
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
      sm.x[k][cc] = (row < n && col < ncols) ? to_f(X[row * ncols + col]) : 0.f;
    }
    __syncthreads();
    float acc[kMicro][kMicro];
#pragma unroll
    for (int r = 0; r < kMicro; ++r)
#pragma unroll
      for (int c = 0; c < kMicro; ++c) acc[r][c] = 0.f;
#pragma unroll 4
    for (int k = 0; k < kTile; ++k) {
      float wv[kMicro], xv[kMicro];
#pragma unroll
      for (int r = 0; r < kMicro; ++r) wv[r] = kTrans ? sm.w[k][ty + 16 * r] : sm.w[ty + 16 * r][k];
#pragma unroll
      for (int c = 0; c < kMicro; ++c) xv[c] = sm.x[k][tx + 16 * c];
#pragma unroll
      for (int r = 0; r < kMicro; ++r)
#pragma unroll
        for (int c = 0; c < kMicro; ++c) acc[r][c] = fmaf(wv[r], xv[c], acc[r][c]);
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

// Sum over the 16 lanes of a row group (all 32 lanes of the warp must call it).
__device__ __forceinline__ float row_sum16(float v) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Online log-sum-exp state (m, s): lse = m + log(s).  m = -inf, s = 0 is empty.
__device__ __forceinline__ void lse_push(float& m, float& s, float x) {
  if (x > m) {
    s = s * __expf(m - x) + 1.f;  // exp(-inf) = 0 on the first element
    m = x;
  } else {
    s += __expf(x - m);
  }
}

// Merge the (m, s) states of the 16 lanes of a row group; every lane gets the result.
__device__ __forceinline__ void lse_merge16(float& m, float& s) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
    const float mm = fmaxf(m, m2);
    if (mm != -INFINITY) s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
    m = mm;
  }
}

}  // namespace ggnet::cuda::tiles
