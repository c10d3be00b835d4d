// Backward of the guided spatial operator by recomputation (docs/kernels.md), scalar
// float32-FMA path (tiles_scalar.cuh), three kernels:
//
//   rvec_kernel   (grid: query blocks x B): R_i = sum_j p_ij dp_ij, with
//                 dp_ij = s_ij (ds_ij - D_i), ds_ij = do_i . mu_j, s_ij = exp(p_ij) / L_i.
//   qgrad_kernel  (grid: query blocks x B): da_ij = p_ij dp_ij - Sx_ij R_i,
//                 db_ij = p_ij dp_ij - Sg_ij R_i;  dtheta_i += da_ij phi_j, deta_i += db_ij rho_j.
//   kgrad_kernel  (grid: key blocks x B):   dmu_j += s_ij do_i, dphi_j += da_ij theta_i,
//                 drho_j += db_ij eta_i (loop over query tiles).
// R needs a whole row before da exists, hence the separate first pass (no o2/q saved by
// the forward).  Every output row is owned by one block and accumulated in a fixed order
// in float32 (outputs are zero on entry): no atomics, deterministic results.
// The tensor-core variant is spatial_bwd_tc.cu.
#include "cuda/common.cuh"
#include "cuda/launchers.h"
#include "cuda/tiles_scalar.cuh"

namespace ggnet::cuda {
namespace {

using namespace scalar;

// query_stats() of the micro-tile rows i0 + ty + 16 r, and whether each row exists.
struct RowStats {
  QueryStats q[kMicro];
  bool ok[kMicro];
};

template <bool kWithR>
__device__ __forceinline__ void load_rows(RowStats& rs, const float* st, const float* dvec,
                                          const float* rvec, int64_t i0, int64_t n) {
  const int ty = lane_ty();
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const int64_t i = i0 + ty + 16 * r;
    rs.ok[r] = i < n;
    rs.q[r] = query_stats<true, kWithR>(st, dvec, rvec, i, n);
  }
}

// Recompute a tile: a <- a_ij, b <- b_ij, ds <- do_i . mu_j for rows i0.., columns j0..
template <typename T>
__device__ __forceinline__ void recompute(Smem& sm, const BatchInputs<T>& in, const float* go,
                                          int64_t i0, int64_t j0, const SpatialSizes& sz, Micro& a,
                                          Micro& bb, Micro& ds) {
  tile_pair_scores(sm, in, i0, j0, sz, a, bb);
  tile_scores(sm, go, i0, in.mu, j0, sz.n, sz.c, ds);
}

// Blocks per SM stated for ptxas (docs/cuda_backend.md, "Resources"): two for rvec
// (<= 128 registers), one for qgrad and kgrad (~155 and ~220 registers).  qgrad at two
// blocks (128 registers) spills 36-52 bytes; at one it does not.
// (Separate __restrict__ pointer parameters rather than a SpatialParams: see
// spatial_fwd_scalar.cu.)
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    rvec_kernel(const float* __restrict__ grad_o, const T* __restrict__ theta,
                const T* __restrict__ phi, const T* __restrict__ eta, const T* __restrict__ rho,
                const T* __restrict__ mu, const float* __restrict__ stats,
                const float* __restrict__ dvec, float* __restrict__ rvec, SpatialSizes sz) {
  __shared__ Smem sm;
  const int64_t n = sz.n, c = sz.c;
  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kTile;
  const BatchInputs<T> in(theta, phi, eta, rho, mu, b, n, sz.d, sz.dg, c);
  const float* go = grad_o + b * n * c;
  const int tx = lane_tx(), ty = lane_ty();
  RowStats rs;
  load_rows<false>(rs, stats + b * 3 * n, dvec + b * n, nullptr, i0, n);

  float racc[kMicro] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    Micro a, bb, ds;
    recompute(sm, in, go, i0, j0, sz, a, bb, ds);
#pragma unroll
    for (int cc = 0; cc < kMicro; ++cc) {
      if (j0 + tx + 16 * cc >= n) continue;
#pragma unroll
      for (int r = 0; r < kMicro; ++r) {
        const PairGrads g = pair_grads(a[r][cc], bb[r][cc], ds[r][cc], rs.q[r]);
        racc[r] = fmaf(g.p * g.s, ds[r][cc] - rs.q[r].dv, racc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const float total = lane_sum<16>(racc[r]);
    const int64_t i = i0 + ty + 16 * r;
    if (tx == 0 && i < n) rvec[b * n + i] = total;
  }
}

// Element-wise gradients of one tile, in place: a <- da, bb <- db, ds <- s (0 when masked).
__device__ __forceinline__ void tile_grads(const RowStats& rs, int64_t j0, int64_t n, Micro& a,
                                           Micro& bb, Micro& ds) {
  const int tx = lane_tx();
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
#pragma unroll
    for (int cc = 0; cc < kMicro; ++cc) {
      if (!rs.ok[r] || j0 + tx + 16 * cc >= n) {
        a[r][cc] = bb[r][cc] = ds[r][cc] = 0.f;
        continue;
      }
      const PairGrads g = pair_grads(a[r][cc], bb[r][cc], ds[r][cc], rs.q[r]);
      a[r][cc] = g.da;
      bb[r][cc] = g.db;
      ds[r][cc] = g.s;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    qgrad_kernel(const float* __restrict__ grad_o, const T* __restrict__ theta,
                 const T* __restrict__ phi, const T* __restrict__ eta, const T* __restrict__ rho,
                 const T* __restrict__ mu, const float* __restrict__ stats,
                 const float* __restrict__ dvec, const float* __restrict__ rvec,
                 float* __restrict__ dtheta, float* __restrict__ deta, SpatialSizes sz) {
  __shared__ Smem sm;
  const int64_t n = sz.n, d = sz.d, dg = sz.dg, c = sz.c;
  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kTile;
  const BatchInputs<T> in(theta, phi, eta, rho, mu, b, n, d, dg, c);
  const float* go = grad_o + b * n * c;
  RowStats rs;
  load_rows<true>(rs, stats + b * 3 * n, dvec + b * n, rvec + b * n, i0, n);

  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    Micro a, bb, ds;
    recompute(sm, in, go, i0, j0, sz, a, bb, ds);
    tile_grads(rs, j0, n, a, bb, ds);
    store_w(sm, a);
    tile_accumulate<false>(sm, dtheta + b * n * d, i0, in.phi, j0, n, d);
    store_w(sm, bb);
    tile_accumulate<false>(sm, deta + b * n * dg, i0, in.rho, j0, n, dg);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    kgrad_kernel(const float* __restrict__ grad_o, const T* __restrict__ theta,
                 const T* __restrict__ phi, const T* __restrict__ eta, const T* __restrict__ rho,
                 const T* __restrict__ mu, const float* __restrict__ stats,
                 const float* __restrict__ dvec, const float* __restrict__ rvec,
                 float* __restrict__ dphi, float* __restrict__ drho, float* __restrict__ dmu,
                 SpatialSizes sz) {
  __shared__ Smem sm;
  const int64_t n = sz.n, d = sz.d, dg = sz.dg, c = sz.c;
  const int64_t b = blockIdx.y, j0 = int64_t(blockIdx.x) * kTile;
  const BatchInputs<T> in(theta, phi, eta, rho, mu, b, n, d, dg, c);
  const float* go = grad_o + b * n * c;
  const float* st = stats + b * 3 * n;

  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    RowStats rs;
    load_rows<true>(rs, st, dvec + b * n, rvec + b * n, i0, n);
    Micro a, bb, ds;
    recompute(sm, in, go, i0, j0, sz, a, bb, ds);
    tile_grads(rs, j0, n, a, bb, ds);
    // The tile is (query i, key j); the block owns the key rows j0.. of the outputs.
    store_w(sm, ds);
    tile_accumulate<true>(sm, dmu + b * n * c, j0, go, i0, n, c);
    store_w(sm, a);
    tile_accumulate<true>(sm, dphi + b * n * d, j0, in.theta, i0, n, d);
    store_w(sm, bb);
    tile_accumulate<true>(sm, drho + b * n * dg, j0, in.eta, i0, n, dg);
  }
}

template <typename T>
cudaError_t backward(const SpatialParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.sz.n + kTile - 1) / kTile),
                  static_cast<unsigned>(p.sz.batch));
  const T *th = typed<T>(p.theta), *ph = typed<T>(p.phi), *et = typed<T>(p.eta),
          *rh = typed<T>(p.rho), *mv = typed<T>(p.mu);
  rvec_kernel<T>
      <<<grid, kThreads, 0, stream>>>(p.grad_o, th, ph, et, rh, mv, p.stats, p.dvec, p.rvec, p.sz);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  qgrad_kernel<T><<<grid, kThreads, 0, stream>>>(p.grad_o, th, ph, et, rh, mv, p.stats, p.dvec,
                                                 p.rvec, p.dtheta, p.deta, p.sz);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  kgrad_kernel<T><<<grid, kThreads, 0, stream>>>(p.grad_o, th, ph, et, rh, mv, p.stats, p.dvec,
                                                 p.rvec, p.dphi, p.drho, p.dmu, p.sz);
  return cudaGetLastError();
}

}  // namespace

cudaError_t spatial_bwd_scalar(const SpatialParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto t) { return backward<decltype(t)>(p, stream); });
}

}  // namespace ggnet::cuda
