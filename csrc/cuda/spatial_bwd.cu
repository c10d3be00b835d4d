// Backward of the guided spatial operator by recomputation (docs/kernels.md), three kernels:
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
#include "cuda/launchers.h"
#include "cuda/spatial_bwd_tc.cuh"
#include "cuda/tiles.cuh"

namespace ggnet::cuda {
namespace {

using namespace tiles;

// Per-row statistics of the micro-tile rows i0 + ty + 16 r.
struct RowStats {
  float la[kMicro], lb[kMicro], inv_l[kMicro], dv[kMicro], rv[kMicro];
  bool ok[kMicro];
};

__device__ __forceinline__ void load_rows(RowStats& rs, const float* st, const float* dvec,
                                          const float* rvec, int64_t i0, int64_t n) {
  const int ty = lane_ty();
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const int64_t i = i0 + ty + 16 * r;
    rs.ok[r] = i < n;
    rs.la[r] = rs.ok[r] ? st[i] : 0.f;
    rs.lb[r] = rs.ok[r] ? st[n + i] : 0.f;
    rs.inv_l[r] = rs.ok[r] ? 1.f / st[2 * n + i] : 0.f;
    rs.dv[r] = rs.ok[r] ? dvec[i] : 0.f;
    rs.rv[r] = (rvec != nullptr && rs.ok[r]) ? rvec[i] : 0.f;
  }
}

// Recompute a tile: a <- a_ij, b <- b_ij, ds <- do_i . mu_j for rows i0.., columns j0..
template <typename T>
__device__ __forceinline__ void recompute(Smem& sm, const T* th, const T* ph, const T* et,
                                          const T* rh, const float* go, const T* mv, int64_t i0,
                                          int64_t j0, const SpatialSizes& sz,
                                          float (&a)[kMicro][kMicro],
                                          float (&bb)[kMicro][kMicro],
                                          float (&ds)[kMicro][kMicro]) {
  tile_scores(sm, th, i0, ph, j0, sz.n, sz.d, a);
  tile_scores(sm, et, i0, rh, j0, sz.n, sz.dg, bb);
  tile_scores(sm, go, i0, mv, j0, sz.n, sz.c, ds);
}

// Blocks per SM stated for ptxas (docs/cuda_backend.md, "Resources"): two for rvec
// (<= 128 registers), one for qgrad and kgrad (~155 and ~220 registers).  qgrad at two
// blocks (128 registers) spills 36-52 bytes; at one it does not.
template <typename T>
__global__ void __launch_bounds__(kThreads, 2)
    rvec_kernel(const float* __restrict__ grad_o, const T* __restrict__ theta,
                const T* __restrict__ phi, const T* __restrict__ eta, const T* __restrict__ rho,
                const T* __restrict__ mu, const float* __restrict__ stats,
                const float* __restrict__ dvec, float* __restrict__ rvec, SpatialSizes sz) {
  __shared__ Smem sm;
  const int64_t n = sz.n, d = sz.d, dg = sz.dg, c = sz.c;
  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kTile;
  const T* th = theta + b * n * d;
  const T* ph = phi + b * n * d;
  const T* et = eta + b * n * dg;
  const T* rh = rho + b * n * dg;
  const T* mv = mu + b * n * c;
  const float* go = grad_o + b * n * c;
  const int tx = lane_tx(), ty = lane_ty();
  RowStats rs;
  load_rows(rs, stats + b * 3 * n, dvec + b * n, nullptr, i0, n);

  float racc[kMicro] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    float a[kMicro][kMicro], bb[kMicro][kMicro], ds[kMicro][kMicro];
    recompute(sm, th, ph, et, rh, go, mv, i0, j0, sz, a, bb, ds);
#pragma unroll
    for (int cc = 0; cc < kMicro; ++cc) {
      if (j0 + tx + 16 * cc >= n) continue;
#pragma unroll
      for (int r = 0; r < kMicro; ++r) {
        const float p = __expf((a[r][cc] - rs.la[r]) + (bb[r][cc] - rs.lb[r]));
        const float s = __expf(p) * rs.inv_l[r];
        racc[r] = fmaf(p * s, ds[r][cc] - rs.dv[r], racc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
    const float total = row_sum16(racc[r]);
    const int64_t i = i0 + ty + 16 * r;
    if (tx == 0 && i < n) rvec[b * n + i] = total;
  }
}

// Element-wise gradients of one tile, in place: a <- da, bb <- db, ds <- s (0 when masked).
__device__ __forceinline__ void tile_grads(const RowStats& rs, int64_t j0, int64_t n,
                                           float (&a)[kMicro][kMicro],
                                           float (&bb)[kMicro][kMicro],
                                           float (&ds)[kMicro][kMicro]) {
  const int tx = lane_tx();
#pragma unroll
  for (int r = 0; r < kMicro; ++r) {
#pragma unroll
    for (int cc = 0; cc < kMicro; ++cc) {
      if (!rs.ok[r] || j0 + tx + 16 * cc >= n) {
        a[r][cc] = bb[r][cc] = ds[r][cc] = 0.f;
        continue;
      }
      const float xa = a[r][cc] - rs.la[r], xb = bb[r][cc] - rs.lb[r];
      const float p = __expf(xa + xb);
      const float s = __expf(p) * rs.inv_l[r];
      const float pdp = p * s * (ds[r][cc] - rs.dv[r]);
      a[r][cc] = pdp - __expf(xa) * rs.rv[r];   // da = p dp - Sx R
      bb[r][cc] = pdp - __expf(xb) * rs.rv[r];  // db = p dp - Sg R
      ds[r][cc] = s;
    }
  }
}

__device__ __forceinline__ void store_w(Smem& sm, const float (&v)[kMicro][kMicro]) {
  const int tx = lane_tx(), ty = lane_ty();
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int cc = 0; cc < kMicro; ++cc) sm.w[ty + 16 * r][tx + 16 * cc] = v[r][cc];
  __syncthreads();
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
  const T* th = theta + b * n * d;
  const T* ph = phi + b * n * d;
  const T* et = eta + b * n * dg;
  const T* rh = rho + b * n * dg;
  const T* mv = mu + b * n * c;
  const float* go = grad_o + b * n * c;
  RowStats rs;
  load_rows(rs, stats + b * 3 * n, dvec + b * n, rvec + b * n, i0, n);

  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    float a[kMicro][kMicro], bb[kMicro][kMicro], ds[kMicro][kMicro];
    recompute(sm, th, ph, et, rh, go, mv, i0, j0, sz, a, bb, ds);
    tile_grads(rs, j0, n, a, bb, ds);
    store_w(sm, a);
    tile_accumulate<false>(sm, dtheta + b * n * d, i0, ph, j0, n, d);
    store_w(sm, bb);
    tile_accumulate<false>(sm, deta + b * n * dg, i0, rh, j0, n, dg);
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
  const T* th = theta + b * n * d;
  const T* ph = phi + b * n * d;
  const T* et = eta + b * n * dg;
  const T* rh = rho + b * n * dg;
  const T* mv = mu + b * n * c;
  const float* go = grad_o + b * n * c;
  const float* st = stats + b * 3 * n;

  for (int64_t i0 = 0; i0 < n; i0 += kTile) {
    RowStats rs;
    load_rows(rs, st, dvec + b * n, rvec + b * n, i0, n);
    float a[kMicro][kMicro], bb[kMicro][kMicro], ds[kMicro][kMicro];
    recompute(sm, th, ph, et, rh, go, mv, i0, j0, sz, a, bb, ds);
    tile_grads(rs, j0, n, a, bb, ds);
    // The tile is (query i, key j); the block owns the key rows j0.. of the outputs.
    store_w(sm, ds);
    tile_accumulate<true>(sm, dmu + b * n * c, j0, go, i0, n, c);
    store_w(sm, a);
    tile_accumulate<true>(sm, dphi + b * n * d, j0, th, i0, n, d);
    store_w(sm, bb);
    tile_accumulate<true>(sm, drho + b * n * dg, j0, et, i0, n, dg);
  }
}

template <typename T>
cudaError_t backward_impl(const float* grad_o, const void* theta, const void* phi,
                          const void* eta, const void* rho, const void* mu, const float* stats,
                          const float* dvec, float* rvec, float* dtheta, float* dphi,
                          float* deta, float* drho, float* dmu, const SpatialSizes& sz,
                          cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((sz.n + kTile - 1) / kTile),
                  static_cast<unsigned>(sz.batch));
  const T* th = static_cast<const T*>(theta);
  const T* ph = static_cast<const T*>(phi);
  const T* et = static_cast<const T*>(eta);
  const T* rh = static_cast<const T*>(rho);
  const T* mv = static_cast<const T*>(mu);
  rvec_kernel<T><<<grid, kThreads, 0, stream>>>(grad_o, th, ph, et, rh, mv, stats, dvec, rvec, sz);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  qgrad_kernel<T><<<grid, kThreads, 0, stream>>>(grad_o, th, ph, et, rh, mv, stats, dvec, rvec,
                                                 dtheta, deta, sz);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  kgrad_kernel<T><<<grid, kThreads, 0, stream>>>(grad_o, th, ph, et, rh, mv, stats, dvec, rvec,
                                                 dphi, drho, dmu, sz);
  return cudaGetLastError();
}

}  // namespace

cudaError_t spatial_backward(DType dt, const float* grad_o, const void* theta, const void* phi,
                             const void* eta, const void* rho, const void* mu,
                             const float* stats, const float* dvec, float* rvec, float* dtheta,
                             float* dphi, float* deta, float* drho, float* dmu,
                             const SpatialSizes& sz, cudaStream_t stream) {
  switch (dt) {
    case DType::kFloat32:
      return backward_impl<float>(grad_o, theta, phi, eta, rho, mu, stats, dvec, rvec, dtheta,
                                  dphi, deta, drho, dmu, sz, stream);
    case DType::kFloat16:
      return backward_impl<__half>(grad_o, theta, phi, eta, rho, mu, stats, dvec, rvec, dtheta,
                                   dphi, deta, drho, dmu, sz, stream);
    case DType::kBFloat16:
      return backward_impl<__nv_bfloat16>(grad_o, theta, phi, eta, rho, mu, stats, dvec, rvec,
                                          dtheta, dphi, deta, drho, dmu, sz, stream);
  }
  return cudaErrorInvalidValue;
}

bool spatial_bwd_uses_tensor_cores(DType dt, const SpatialSizes& sz, int device_major) {
  switch (dt) {
    case DType::kBFloat16: return bwd_tc::enabled<__nv_bfloat16>(device_major, sz);
    default: return false;
  }
}

cudaError_t spatial_backward_tc(DType dt, const void* theta_p, const void* phi_p,
                                const void* eta_p, const void* rho_p, const void* mu_p,
                                const void* do_hi_p, const void* do_lo_p, const float* stats,
                                const float* dvec, float* rvec, float* dtheta, float* dphi,
                                float* deta, float* drho, float* dmu, const SpatialSizes& sz,
                                cudaStream_t stream) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    return bwd_tc::launch_backward<T>(
        static_cast<const T*>(theta_p), static_cast<const T*>(phi_p),
        static_cast<const T*>(eta_p), static_cast<const T*>(rho_p), static_cast<const T*>(mu_p),
        static_cast<const T*>(do_hi_p), static_cast<const T*>(do_lo_p), stats, dvec, rvec,
        dtheta, dphi, deta, drho, dmu, sz, stream);
  };
  switch (dt) {
    case DType::kBFloat16: return run(__nv_bfloat16{});
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace ggnet::cuda
