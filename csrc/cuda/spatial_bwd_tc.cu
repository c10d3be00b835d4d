// Backward of the guided spatial operator on the tensor cores (WMMA), bfloat16 on sm_80+;
// same outputs as spatial_bwd_scalar.cu.
//
// Only bfloat16 takes it: the weights s ~ 1/N and da, db ~ p s (ds - D) are far below
// float16's normal range (6e-5) at realistic N and gradient scales, while bfloat16 keeps
// float32's exponent range.  The kernels are written for any 16-bit T.
//
// Operands come zero-padded from ops_cuda.cpp: [B, Npad, xpad] in the input dtype T with
// Npad = N rounded up to 64 and xpad = x rounded up to 16, so every 16x16 fragment is
// loaded straight from global memory (aligned, in bounds, zeros outside) and only the
// element-wise step needs masks.  grad_o (float32) arrives split as do_hi + do_lo (two T
// tensors, do_lo = T(do - do_hi)), and every element-wise weight w (s, da, db) enters the
// MMAs split the same way: w_hi @ x + w_lo @ x (+ w_hi @ do_lo), which keeps ~16 bits of
// each weight.  The split matters: sum_j da_ij = 0, so a rounding error of da_ij would be
// multiplied by phi_j itself (not phi_j - mean) and grow like sqrt(N).
//
// Block = 4 warps, 64 rows of the output (16 per warp), accumulators in registers for the
// whole loop, each output row written once by its warp: no atomics, deterministic.
//   qside_kernel<kDq = false>: R_i = sum_j p_ij dp_ij                  (query rows)
//   qside_kernel<kDq = true>:  dtheta_i, deta_i                       (query rows)
//   kside_kernel<kDmu = true>: dmu_j = sum_i s_ij do_i                 (key rows)
//   kside_kernel<kDmu = false>: dphi_j, drho_j                         (key rows)
// The two gradient kernels accumulate round16(d)/16 + round16(dg)/16 fragments.  Up to
// kMaxFrag (d + dg <= 256) one launch does both; beyond, each runs twice (`part`:
// kFirst = dtheta / dphi only, kSecond = deta / drho only), recomputing the scores, so
// that d, dg <= 256 each (d + dg <= 512) stay on the tensor cores.
// Element-wise formulas: pair_grads() of common.cuh, as in spatial_bwd_scalar.cu.
#include <cstdint>
#include <initializer_list>

#include "cuda/common.cuh"
#include "cuda/launchers.h"

namespace ggnet::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;
constexpr int kMaxFrag = 16;  // accumulator fragments per warp (C, d, dg <= 256)
constexpr int kLdw = 16 + 8;  // leading dimension of the per-warp weight tiles
// Which gradient pair a gradient kernel accumulates (see the top).
constexpr int kBoth = 0, kFirst = 1, kSecond = 2;

// Per-warp shared memory: 3 float 16x16 scratch tiles + 6 T weight tiles [16][kLdw].
template <typename T>
struct alignas(128) WarpSmem {
  float a[256], b[256], ds[256];
  float q[5][16];  // key side: lse_a, lse_b, 1/L, D, R of the current 16 queries
  T w[6][16 * kLdw];
};

// acc += W[16 x 16] (per-warp tile, ld kLdw) @ X[16 rows][16 columns at col] (ld ldx).
template <typename T>
__device__ __forceinline__ void wx_block(FragAcc& acc, const T* w, const T* x, int64_t ldx) {
  wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::row_major> fw;
  wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::row_major> fx;
  wm::load_matrix_sync(fw, w, kLdw);
  wm::load_matrix_sync(fx, x, static_cast<unsigned>(ldx));
  wm::mma_sync(acc, fw, fx, acc);
}

template <typename T>
__device__ __forceinline__ void split_store(T* hi, T* lo, int idx, float v) {
  const T h = from_float<T>(v);
  hi[idx] = h;
  lo[idx] = from_float<T>(v - to_float(h));
}

// Writes the warp's 16 output rows (row0..) from the accumulators: fragments [0, nf1)
// hold columns of out1 ([n, dim1] float32), fragments [nf1, nf1 + nf2) columns of out2.
// (Static fragment indices only: a runtime index would move acc to local memory.)
__device__ __forceinline__ void write_rows(FragAcc (&acc)[kMaxFrag], float* scratch, int64_t row0,
                                           int64_t n, float* out1, int64_t dim1, int nf1,
                                           float* out2, int64_t dim2, int nf2) {
  const int lane = threadIdx.x % 32, row = lane >> 1;
  const int64_t r = row0 + row;
#pragma unroll
  for (int f = 0; f < kMaxFrag; ++f) {
    if (f < nf1 + nf2) {
      wm::store_matrix_sync(scratch, acc[f], 16, wm::mem_row_major);
      __syncwarp();
      float* out = f < nf1 ? out1 : out2;
      const int64_t dim = f < nf1 ? dim1 : dim2;
      const int64_t c0 = int64_t(f < nf1 ? f : f - nf1) * 16;
      for (int t = 0; t < 8; ++t) {
        const int cl = rotated_col(lane, t);
        if (r < n && c0 + cl < dim) out[r * dim + c0 + cl] = scratch[row * 16 + cl];
      }
      __syncwarp();
    }
  }
}

// Query side.  kDq = false: rvec.  kDq = true: dtheta, deta (needs rvec).
// (Separate __restrict__ pointer parameters rather than a SpatialParams: see
// spatial_fwd_scalar.cu.)
template <typename T, bool kDq>
__global__ void __launch_bounds__(kThreads)
    qside_kernel(const T* __restrict__ theta, const T* __restrict__ phi, const T* __restrict__ eta,
                 const T* __restrict__ rho, const T* __restrict__ mu, const T* __restrict__ do_hi,
                 const T* __restrict__ do_lo, const float* __restrict__ stats,
                 const float* __restrict__ dvec, float* __restrict__ rvec,
                 float* __restrict__ dtheta, float* __restrict__ deta, SpatialSizes sz, int part) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  __shared__ WarpSmem<T> smem[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  WarpSmem<T>& ws = smem[warp];
  const int64_t b = blockIdx.y, n = sz.n, npad = sz.npad;
  const int64_t r0 = int64_t(blockIdx.x) * kRows + warp * 16;  // this warp's query rows
  const BatchInputs<T> in(theta, phi, eta, rho, mu, b, npad, sz.dpad, sz.dgpad, sz.cpad);
  const T* th = in.theta + r0 * sz.dpad;  // the warp's query rows
  const T* et = in.eta + r0 * sz.dgpad;
  const T* dh = do_hi + (b * npad + r0) * sz.cpad;
  const T* dl = do_lo + (b * npad + r0) * sz.cpad;

  const int row = lane >> 1;
  const int64_t i = r0 + row;
  const bool row_ok = i < n;
  const QueryStats q = query_stats<true, kDq>(stats + b * 3 * n, dvec + b * n, rvec + b * n, i, n);
  float racc = 0.f;
  // fragments of dtheta (or dphi) and deta (or drho) this launch accumulates
  const int nd = part == kSecond ? 0 : static_cast<int>(sz.dpad / 16);
  const int ndg = part == kFirst ? 0 : static_cast<int>(sz.dgpad / 16);

  FragAcc acc[kMaxFrag];
#pragma unroll
  for (int f = 0; f < kMaxFrag; ++f) wm::fill_fragment(acc[f], 0.f);  // (unused when !kDq)

  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    FragAcc fa, fb, fs;
    wm::fill_fragment(fa, 0.f);
    wm::fill_fragment(fb, 0.f);
    wm::fill_fragment(fs, 0.f);
    dot_block(fa, th, in.phi + j0 * sz.dpad, sz.dpad, sz.dpad);
    dot_block(fb, et, in.rho + j0 * sz.dgpad, sz.dgpad, sz.dgpad);
    dot_block(fs, dh, in.mu + j0 * sz.cpad, sz.cpad, sz.cpad);
    dot_block(fs, dl, in.mu + j0 * sz.cpad, sz.cpad, sz.cpad);
    wm::store_matrix_sync(ws.a, fa, 16, wm::mem_row_major);
    wm::store_matrix_sync(ws.b, fb, 16, wm::mem_row_major);
    wm::store_matrix_sync(ws.ds, fs, 16, wm::mem_row_major);
    __syncwarp();
    for (int t = 0; t < 8; ++t) {
      const int cl = rotated_col(lane, t), e = row * 16 + cl;
      float da = 0.f, db = 0.f;
      if (row_ok && j0 + cl < n) {
        const PairGrads g = pair_grads(ws.a[e], ws.b[e], ws.ds[e], q);
        racc += g.pdp;
        da = g.da;
        db = g.db;
      }
      if (kDq) {
        split_store(ws.w[0], ws.w[1], row * kLdw + cl, da);
        split_store(ws.w[2], ws.w[3], row * kLdw + cl, db);
      }
    }
    __syncwarp();
    if (kDq) {
#pragma unroll
      for (int f = 0; f < kMaxFrag; ++f) {
        if (f < nd) {  // dtheta[:, 16f..] += da @ phi[j0.., 16f..]
          const T* x = in.phi + j0 * sz.dpad + f * 16;
          wx_block(acc[f], ws.w[0], x, sz.dpad);
          wx_block(acc[f], ws.w[1], x, sz.dpad);
        } else if (f < nd + ndg) {  // deta[:, 16g..] += db @ rho[j0.., 16g..]
          const T* x = in.rho + j0 * sz.dgpad + (f - nd) * 16;
          wx_block(acc[f], ws.w[2], x, sz.dgpad);
          wx_block(acc[f], ws.w[3], x, sz.dgpad);
        }
      }
      __syncwarp();  // the weight tiles are rewritten by the next key block
    }
  }

  if (!kDq) {
    racc = lane_sum<2>(racc);
    if (row_ok && (lane & 1) == 0) rvec[b * n + i] = racc;
  } else {
    write_rows(acc, ws.a, r0, n, dtheta + b * n * sz.d, sz.d, nd, deta + b * n * sz.dg, sz.dg, ndg);
  }
#endif
}

// Key side.  kDmu = true: dmu.  kDmu = false: dphi, drho.
template <typename T, bool kDmu>
__global__ void __launch_bounds__(kThreads)
    kside_kernel(const T* __restrict__ theta, const T* __restrict__ phi, const T* __restrict__ eta,
                 const T* __restrict__ rho, const T* __restrict__ mu, const T* __restrict__ do_hi,
                 const T* __restrict__ do_lo, const float* __restrict__ stats,
                 const float* __restrict__ dvec, const float* __restrict__ rvec,
                 float* __restrict__ dmu, float* __restrict__ dphi, float* __restrict__ drho,
                 SpatialSizes sz, int part) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();
#else
  __shared__ WarpSmem<T> smem[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  WarpSmem<T>& ws = smem[warp];
  const int64_t b = blockIdx.y, n = sz.n, npad = sz.npad;
  const int64_t r0 = int64_t(blockIdx.x) * kRows + warp * 16;  // this warp's key rows
  const BatchInputs<T> in(theta, phi, eta, rho, mu, b, npad, sz.dpad, sz.dgpad, sz.cpad);
  const T* ph = in.phi + r0 * sz.dpad;  // the warp's key rows
  const T* rh = in.rho + r0 * sz.dgpad;
  const T* mk = in.mu + r0 * sz.cpad;
  const T* dh = do_hi + b * npad * sz.cpad;
  const T* dl = do_lo + b * npad * sz.cpad;
  const float* st = stats + b * 3 * n;
  const float* dvb = dvec + b * n;
  const float* rvb = rvec + b * n;

  const int row = lane >> 1;
  const bool row_ok = r0 + row < n;  // key j = r0 + row
  const int nc = static_cast<int>(sz.cpad / 16);
  const int nd = part == kSecond ? 0 : static_cast<int>(sz.dpad / 16);
  const int ndg = part == kFirst ? 0 : static_cast<int>(sz.dgpad / 16);

  FragAcc acc[kMaxFrag];
#pragma unroll
  for (int f = 0; f < kMaxFrag; ++f) wm::fill_fragment(acc[f], 0.f);

  for (int64_t i0 = 0; i0 < n; i0 += 16) {
    // Transposed tiles: element (key r, query c).
    FragAcc fa, fb, fs;
    wm::fill_fragment(fa, 0.f);
    wm::fill_fragment(fb, 0.f);
    dot_block(fa, ph, in.theta + i0 * sz.dpad, sz.dpad, sz.dpad);
    dot_block(fb, rh, in.eta + i0 * sz.dgpad, sz.dgpad, sz.dgpad);
    wm::store_matrix_sync(ws.a, fa, 16, wm::mem_row_major);
    wm::store_matrix_sync(ws.b, fb, 16, wm::mem_row_major);
    if (lane < 16) {  // the 16 queries' statistics, read from global memory once
      const QueryStats q = query_stats<!kDmu, !kDmu>(st, dvb, rvb, i0 + lane, n);
      ws.q[0][lane] = q.la;
      ws.q[1][lane] = q.lb;
      ws.q[2][lane] = q.inv_l;
      ws.q[3][lane] = q.dv;
      ws.q[4][lane] = q.rv;
    }
    if (!kDmu) {
      wm::fill_fragment(fs, 0.f);
      dot_block(fs, mk, dh + i0 * sz.cpad, sz.cpad, sz.cpad);
      dot_block(fs, mk, dl + i0 * sz.cpad, sz.cpad, sz.cpad);
      wm::store_matrix_sync(ws.ds, fs, 16, wm::mem_row_major);
    }
    __syncwarp();
    for (int t = 0; t < 8; ++t) {
      const int cl = rotated_col(lane, t), e = row * 16 + cl;
      const int64_t i = i0 + cl;  // query
      float s = 0.f, da = 0.f, db = 0.f;
      if (row_ok && i < n) {
        const QueryStats q{ws.q[0][cl], ws.q[1][cl], ws.q[2][cl], ws.q[3][cl], ws.q[4][cl]};
        const PairGrads g = pair_grads(ws.a[e], ws.b[e], kDmu ? 0.f : ws.ds[e], q);
        s = g.s;
        if (!kDmu) {
          da = g.da;
          db = g.db;
        }
      }
      if (kDmu) {
        split_store(ws.w[0], ws.w[1], row * kLdw + cl, s);
      } else {
        split_store(ws.w[2], ws.w[3], row * kLdw + cl, da);
        split_store(ws.w[4], ws.w[5], row * kLdw + cl, db);
      }
    }
    __syncwarp();
#pragma unroll
    for (int f = 0; f < kMaxFrag; ++f) {
      if (kDmu) {
        if (f < nc) {  // dmu[:, 16f..] += s^T @ (do_hi + do_lo)[i0.., 16f..]
          const int64_t off = i0 * sz.cpad + f * 16;
          wx_block(acc[f], ws.w[0], dh + off, sz.cpad);
          wx_block(acc[f], ws.w[1], dh + off, sz.cpad);
          wx_block(acc[f], ws.w[0], dl + off, sz.cpad);
        }
      } else if (f < nd) {  // dphi[:, 16f..] += da^T @ theta[i0.., 16f..]
        const T* x = in.theta + i0 * sz.dpad + f * 16;
        wx_block(acc[f], ws.w[2], x, sz.dpad);
        wx_block(acc[f], ws.w[3], x, sz.dpad);
      } else if (f < nd + ndg) {  // drho[:, 16g..] += db^T @ eta[i0.., 16g..]
        const T* x = in.eta + i0 * sz.dgpad + (f - nd) * 16;
        wx_block(acc[f], ws.w[4], x, sz.dgpad);
        wx_block(acc[f], ws.w[5], x, sz.dgpad);
      }
    }
    __syncwarp();
  }

  if (kDmu) {
    write_rows(acc, ws.a, r0, n, dmu + b * n * sz.c, sz.c, nc, nullptr, 0, 0);
  } else {
    write_rows(acc, ws.a, r0, n, dphi + b * n * sz.d, sz.d, nd, drho + b * n * sz.dg, sz.dg, ndg);
  }
#endif
}

}  // namespace

// Whether the tensor-core backward runs this problem (bfloat16 only, see the top).
bool spatial_bwd_tc_supported(DType dt, const SpatialSizes& sz, int device_major) {
  if (dt != DType::kBFloat16 || device_major < 8) return false;
  if (sz.cpad / 16 > kMaxFrag || sz.dpad / 16 > kMaxFrag || sz.dgpad / 16 > kMaxFrag) return false;
  return runs_sm80_code(qside_kernel<__nv_bfloat16, false>);
}

// (call only where spatial_bwd_tc_supported())
cudaError_t spatial_bwd_tc(const SpatialParams& p, cudaStream_t stream) {
  using T = __nv_bfloat16;
  if (p.dtype != DType::kBFloat16) return cudaErrorNotSupported;
  const SpatialSizes& sz = p.sz;
  const dim3 grid(static_cast<unsigned>(sz.npad / kRows), static_cast<unsigned>(sz.batch));
  const T *th = typed<T>(p.theta), *ph = typed<T>(p.phi), *et = typed<T>(p.eta),
          *rh = typed<T>(p.rho), *mv = typed<T>(p.mu), *dh = typed<T>(p.do_hi),
          *dl = typed<T>(p.do_lo);
  qside_kernel<T, false><<<grid, kThreads, 0, stream>>>(th, ph, et, rh, mv, dh, dl, p.stats, p.dvec,
                                                        p.rvec, p.dtheta, p.deta, sz, kBoth);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  kside_kernel<T, true><<<grid, kThreads, 0, stream>>>(th, ph, et, rh, mv, dh, dl, p.stats, p.dvec,
                                                       p.rvec, p.dmu, p.dphi, p.drho, sz, kBoth);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  // d + dg <= 256: both gradient pairs in one launch each; else one launch per pair
  const bool one = (sz.dpad + sz.dgpad) / 16 <= kMaxFrag;
  for (const int part : {kBoth, kFirst, kSecond}) {
    if ((part == kBoth) != one) continue;
    qside_kernel<T, true><<<grid, kThreads, 0, stream>>>(
        th, ph, et, rh, mv, dh, dl, p.stats, p.dvec, p.rvec, p.dtheta, p.deta, sz, part);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    kside_kernel<T, false><<<grid, kThreads, 0, stream>>>(
        th, ph, et, rh, mv, dh, dl, p.stats, p.dvec, p.rvec, p.dmu, p.dphi, p.drho, sz, part);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace ggnet::cuda
