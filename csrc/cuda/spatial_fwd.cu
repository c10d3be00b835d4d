// Forward of the guided spatial operator (combine = "product"), streaming over key tiles.
//
// Grid: (ceil(N / 64) query blocks, B); 256 threads per block (tiles.cuh).
//   pass 1 (spatial_stats_kernel): running max/sum over key tiles -> lse_a_i, lse_b_i.
//   pass 2 (spatial_fwd_kernel):   recompute a, b; p = exp((a - lse_a) + (b - lse_b));
//                                  e = expm1(p) (full relative precision for small p);
//                                  L_i = N + sum_j e_ij;  o_i += sum_j e_ij mu_j;
//                                  finally o_i = (sum_j mu_j + o_i) / L_i.
// o (float32, zero on entry) is the accumulator: each block owns its 64 query rows, each
// thread always updates the same elements, so there are no atomics and no races.
// Nothing N x N is ever stored; per block: one 64 x 64 tile in shared memory.
// bfloat16 on sm_80+ takes the tensor-core kernels of wmma_tiles.cuh instead (same
// two passes, same outputs) when d, dg, C <= 256 and the tiles fit in shared memory.
#include "cuda/expm1_unit.cuh"
#include "cuda/launchers.h"
#include "cuda/tiles.cuh"
#include "cuda/wmma_tiles.cuh"

namespace ggnet::cuda {
namespace {

using namespace tiles;

// Two blocks of 256 threads per SM (<= 128 registers): stated, because without the
// minimum ptxas aims at three blocks and spills the 16-bit stats kernel (40 bytes at
// 80 registers on sm_90; benchmarks/cuda_ptxas.py, docs/cuda_backend.md).
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    spatial_stats_kernel(const T* __restrict__ theta, const T* __restrict__ phi,
                         const T* __restrict__ eta, const T* __restrict__ rho,
                         float* __restrict__ stats, SpatialSizes sz) {
  __shared__ Smem sm;
  const int64_t n = sz.n, d = sz.d, dg = sz.dg;
  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kTile;
  const T* th = theta + b * n * d;
  const T* ph = phi + b * n * d;
  const T* et = eta + b * n * dg;
  const T* rh = rho + b * n * dg;
  const int tx = lane_tx(), ty = lane_ty();

  float ma[kMicro], sa[kMicro], mb[kMicro], sb[kMicro];
#pragma unroll
  for (int r = 0; r < kMicro; ++r) ma[r] = mb[r] = -INFINITY, sa[r] = sb[r] = 0.f;

  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    float a[kMicro][kMicro], bb[kMicro][kMicro];
    tile_scores(sm, th, i0, ph, j0, n, d, a);
    tile_scores(sm, et, i0, rh, j0, n, dg, bb);
#pragma unroll
    for (int c = 0; c < kMicro; ++c) {
      if (j0 + tx + 16 * c >= n) continue;
#pragma unroll
      for (int r = 0; r < kMicro; ++r) {
        lse_push(ma[r], sa[r], a[r][c]);
        lse_push(mb[r], sb[r], bb[r][c]);
      }
    }
  }
  float* st = stats + b * 3 * n;
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    lse_merge16(ma[r], sa[r]);
    lse_merge16(mb[r], sb[r]);
    const int64_t i = i0 + ty + 16 * r;
    if (tx == 0 && i < n) {
      st[i] = ma[r] + logf(sa[r]);
      st[n + i] = mb[r] + logf(sb[r]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    spatial_fwd_kernel(const T* __restrict__ theta, const T* __restrict__ phi,
                       const T* __restrict__ eta, const T* __restrict__ rho,
                       const T* __restrict__ mu, const float* __restrict__ musum,
                       float* __restrict__ o, float* __restrict__ stats, SpatialSizes sz) {
  __shared__ Smem sm;
  const int64_t n = sz.n, d = sz.d, dg = sz.dg, c = sz.c;
  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kTile;
  const T* th = theta + b * n * d;
  const T* ph = phi + b * n * d;
  const T* et = eta + b * n * dg;
  const T* rh = rho + b * n * dg;
  const T* mv = mu + b * n * c;
  float* ob = o + b * n * c;
  float* st = stats + b * 3 * n;
  const int tx = lane_tx(), ty = lane_ty();

  float la[kMicro], lb[kMicro], esum[kMicro];
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const int64_t i = i0 + ty + 16 * r;
    la[r] = i < n ? st[i] : 0.f;
    lb[r] = i < n ? st[n + i] : 0.f;
    esum[r] = 0.f;
  }

  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    float a[kMicro][kMicro], bb[kMicro][kMicro];
    tile_scores(sm, th, i0, ph, j0, n, d, a);
    tile_scores(sm, et, i0, rh, j0, n, dg, bb);
#pragma unroll
    for (int r = 0; r < kMicro; ++r) {
      const bool row_ok = i0 + ty + 16 * r < n;
#pragma unroll
      for (int cc = 0; cc < kMicro; ++cc) {
        float e = 0.f;
        if (row_ok && j0 + tx + 16 * cc < n) {
          const float p = __expf((a[r][cc] - la[r]) + (bb[r][cc] - lb[r]));
          e = expm1_unit<10>(p);  // float32 weights: degree 10
        }
        sm.w[ty + 16 * r][tx + 16 * cc] = e;
        esum[r] += e;
      }
    }
    __syncthreads();
    tile_accumulate<false>(sm, ob, i0, mv, j0, n, c);
  }

  // o_i = (sum_j mu_j + sum_j e_ij mu_j) / L_i; each thread rescales the elements it
  // accumulated (same rows/columns as in tile_accumulate).
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const float lsum = float(n) + row_sum16(esum[r]);
    const int64_t i = i0 + ty + 16 * r;
    if (i >= n) continue;
    if (tx == 0) st[2 * n + i] = lsum;
    const float inv = 1.f / lsum;
    for (int64_t c0 = 0; c0 < c; c0 += kTile) {
#pragma unroll
      for (int cc = 0; cc < kMicro; ++cc) {
        const int64_t col = c0 + tx + 16 * cc;
        if (col < c) ob[i * c + col] = (musum[b * c + col] + ob[i * c + col]) * inv;
      }
    }
  }
}

template <typename T>
cudaError_t forward_impl(const void* theta, const void* phi, const void* eta, const void* rho,
                         const void* mu, const float* musum, float* o, float* stats,
                         const SpatialSizes& sz, int device_major, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((sz.n + kTile - 1) / kTile),
                  static_cast<unsigned>(sz.batch));
  const T* th = static_cast<const T*>(theta);
  const T* ph = static_cast<const T*>(phi);
  const T* et = static_cast<const T*>(eta);
  const T* rh = static_cast<const T*>(rho);
  const T* mv = static_cast<const T*>(mu);
  if (wmma_tiles::enabled<T>(device_major, sz)) {
    return wmma_tiles::launch_forward<T>(th, ph, et, rh, mv, musum, o, stats, sz, stream);
  }
  spatial_stats_kernel<T><<<grid, kThreads, 0, stream>>>(th, ph, et, rh, stats, sz);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  spatial_fwd_kernel<T><<<grid, kThreads, 0, stream>>>(th, ph, et, rh, mv, musum, o, stats,
                                                       sz);
  return cudaGetLastError();
}

}  // namespace

bool spatial_uses_tensor_cores(DType dt, const SpatialSizes& sz, int device_major) {
  switch (dt) {
    case DType::kBFloat16: return wmma_tiles::enabled<__nv_bfloat16>(device_major, sz);
    default: return false;
  }
}

cudaError_t spatial_forward(DType dt, const void* theta, const void* phi, const void* eta,
                            const void* rho, const void* mu, const float* musum, float* o,
                            float* stats, const SpatialSizes& sz, int device_major,
                            cudaStream_t stream) {
  switch (dt) {
    case DType::kFloat32:
      return forward_impl<float>(theta, phi, eta, rho, mu, musum, o, stats, sz, device_major,
                                 stream);
    case DType::kFloat16:
      return forward_impl<__half>(theta, phi, eta, rho, mu, musum, o, stats, sz, device_major,
                                  stream);
    case DType::kBFloat16:
      return forward_impl<__nv_bfloat16>(theta, phi, eta, rho, mu, musum, o, stats, sz,
                                         device_major, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace ggnet::cuda
