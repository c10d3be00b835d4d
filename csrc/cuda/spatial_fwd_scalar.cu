// Forward of the guided spatial operator (combine = "product"), scalar float32-FMA path:
// streaming over key tiles, any dtype and size (tiles_scalar.cuh).
//
// Grid: (ceil(N / 64) query blocks, B); 256 threads per block.
//   pass 1 (spatial_stats_kernel): running max/sum over key tiles -> lse_a_i, lse_b_i.
//   pass 2 (spatial_fwd_kernel):   recompute a, b; p = exp((a - lse_a) + (b - lse_b));
//                                  e = expm1(p) (full relative precision for small p);
//                                  L_i = N + sum_j e_ij;  o_i += sum_j e_ij mu_j;
//                                  finally o_i = (sum_j mu_j + o_i) / L_i.
// o (float32, zero on entry) is the accumulator: each block owns its 64 query rows, each
// thread always updates the same elements, so there are no atomics and no races.
// Nothing N x N is ever stored; per block: one 64 x 64 tile in shared memory.
// The tensor-core variant (same two passes, same outputs) is spatial_fwd_tc.cu.
#include "cuda/common.cuh"
#include "cuda/launchers.h"
#include "cuda/tiles_scalar.cuh"

namespace ggnet::cuda {
namespace {

using namespace scalar;

// Two blocks of 256 threads per SM (<= 128 registers): stated, because without the
// minimum ptxas aims at three blocks and spills the 16-bit stats kernel (40 bytes at
// 80 registers on sm_90; benchmarks/cuda_ptxas.py, docs/cuda_backend.md).
// The kernels take their pointers as separate __restrict__ parameters, not a
// SpatialParams: with the struct ptxas allocated more registers (docs/cuda_backend.md).
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    spatial_stats_kernel(const T* __restrict__ theta, const T* __restrict__ phi,
                         const T* __restrict__ eta, const T* __restrict__ rho,
                         float* __restrict__ stats, SpatialSizes sz) {
  __shared__ Smem sm;
  const int64_t n = sz.n;
  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kTile;
  const BatchInputs<T> in(theta, phi, eta, rho, nullptr, b, n, sz.d, sz.dg, 0);
  const int tx = lane_tx(), ty = lane_ty();

  float ma[kMicro], sa[kMicro], mb[kMicro], sb[kMicro];
#pragma unroll
  for (int r = 0; r < kMicro; ++r) ma[r] = mb[r] = -INFINITY, sa[r] = sb[r] = 0.f;

  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    Micro a, bb;
    tile_pair_scores(sm, in, i0, j0, sz, a, bb);
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
    lse_merge_lanes<16>(ma[r], sa[r]);
    lse_merge_lanes<16>(mb[r], sb[r]);
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
  const int64_t n = sz.n, c = sz.c;
  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kTile;
  const BatchInputs<T> in(theta, phi, eta, rho, mu, b, n, sz.d, sz.dg, c);
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
    Micro a, bb;
    tile_pair_scores(sm, in, i0, j0, sz, a, bb);
#pragma unroll
    for (int r = 0; r < kMicro; ++r) {
      const bool row_ok = i0 + ty + 16 * r < n;
#pragma unroll
      for (int cc = 0; cc < kMicro; ++cc) {
        float e = 0.f;
        if (row_ok && j0 + tx + 16 * cc < n) {
          e = pair_weight<10>(a[r][cc], bb[r][cc], la[r], lb[r]);  // float32 weights
        }
        sm.w[ty + 16 * r][tx + 16 * cc] = e;
        esum[r] += e;
      }
    }
    __syncthreads();
    tile_accumulate<false>(sm, ob, i0, in.mu, j0, n, c);
  }

  // o_i = (sum_j mu_j + sum_j e_ij mu_j) / L_i; each thread rescales the elements it
  // accumulated (same rows/columns as in tile_accumulate).
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const float lsum = float(n) + lane_sum<16>(esum[r]);
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
cudaError_t forward(const SpatialParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.sz.n + kTile - 1) / kTile),
                  static_cast<unsigned>(p.sz.batch));
  const T *th = typed<T>(p.theta), *ph = typed<T>(p.phi), *et = typed<T>(p.eta),
          *rh = typed<T>(p.rho), *mv = typed<T>(p.mu);
  spatial_stats_kernel<T><<<grid, kThreads, 0, stream>>>(th, ph, et, rh, p.stats, p.sz);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  spatial_fwd_kernel<T>
      <<<grid, kThreads, 0, stream>>>(th, ph, et, rh, mv, p.musum, p.o, p.stats, p.sz);
  return cudaGetLastError();
}

}  // namespace

cudaError_t spatial_fwd_scalar(const SpatialParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto t) { return forward<decltype(t)>(p, stream); });
}

}  // namespace ggnet::cuda
