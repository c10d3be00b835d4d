// Device helpers shared by the spatial kernels (scalar and tensor-core, forward and
// backward): dtype conversions, the online log-sum-exp, lane reductions, expm1 on [0, 1],
// the element-wise formulas of docs/kernels.md, one batch element's operand rows, and
// the WMMA building blocks of both tensor-core files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda/launchers.h"

namespace ggnet::cuda {

// ---------------------------------------------------------------- dtype conversions

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, float>)
    return x;
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(x);
  else
    return __float2bfloat16_rn(x);
}

// f(T{}) with T the element type of `dt`: the launchers' dtype switch.
template <typename F>
inline cudaError_t dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat16:
      return f(__half{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------- online log-sum-exp

// Online log-sum-exp state (m, s): lse = m + log(s).  m = -inf, s = 0 is empty.
__device__ __forceinline__ void lse_push(float& m, float& s, float x) {
  if (x > m) {
    s = s * __expf(m - x) + 1.f;  // exp(-inf) = 0 on the first element
    m = x;
  } else {
    s += __expf(x - m);
  }
}

// (m, s) <- the state of both sets of elements: (m, s) and (m2, s2).
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  if (mm != -INFINITY) s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
  m = mm;
}

// Merge the (m, s) states of kLanes consecutive lanes (xor shuffles; every lane gets the
// result).  All 32 lanes of the warp must call it.
template <int kLanes>
__device__ __forceinline__ void lse_merge_lanes(float& m, float& s) {
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
    lse_merge(m, s, m2, s2);
  }
}

// Sum over kLanes consecutive lanes (every lane gets it; all 32 lanes must call it).
template <int kLanes>
__device__ __forceinline__ float lane_sum(float v) {
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// ---------------------------------------------------------------- expm1 on [0, 1]

// expm1(p) for p in [0, 1] without the libdevice expm1f (a range reduction, an
// exponential and a correction; --use_fast_math does not replace it): a Taylor
// polynomial in Horner form, all FMAs, full relative precision for tiny p (where
// exp(p) - 1 would lose every digit).  Truncation, relative to expm1(p) >= p, is below
// p^(K+1) / (K+1)! * e / (e - 1): at p = 1, 4e-5 for K = 7 (enough for weights rounded to
// 16 bits right after: bfloat16 keeps 2^-9) and 7e-8 for K = 10 (float32 weights).  The
// spatial operator's p = exp((a - lse_a) + (b - lse_b)) is in (0, 1] by construction.
template <int K>
__device__ __forceinline__ float expm1_unit(float p) {
  static_assert(K == 7 || K == 10, "degree 7 (16-bit weights) or 10 (float32 weights)");
  float r;
  if constexpr (K == 10) {
    r = 1.f / 3628800.f;
    r = fmaf(p, r, 1.f / 362880.f);
    r = fmaf(p, r, 1.f / 40320.f);
    r = fmaf(p, r, 1.f / 5040.f);
  } else {
    r = 1.f / 5040.f;
  }
  r = fmaf(p, r, 1.f / 720.f);
  r = fmaf(p, r, 1.f / 120.f);
  r = fmaf(p, r, 1.f / 24.f);
  r = fmaf(p, r, 1.f / 6.f);
  r = fmaf(p, r, 0.5f);
  r = fmaf(p, r, 1.f);
  return p * r;
}

// ---------------------------------------------------------------- element-wise formulas

// The forward's weight of a (query i, key j) pair from its recomputed scores a, b:
// e_ij = expm1(p_ij), p_ij = exp((a - lse_a_i) + (b - lse_b_i)) (each difference <= 0).
// K: the degree of expm1_unit (10 for float32 weights, 7 for weights rounded to 16 bits).
template <int K>
__device__ __forceinline__ float pair_weight(float a, float b, float la, float lb) {
  return expm1_unit<K>(__expf((a - la) + (b - lb)));
}

// What the backward needs of query row i: lse_a, lse_b, 1/L, D and R (0 outside the rows).
struct QueryStats {
  float la, lb, inv_l, dv, rv;
};

// st: the batch element's stats [3, n]; dvec, rvec: its [n] vectors, read only where
// kWithD / kWithR (0 otherwise); a null rvec reads as 0 too.
template <bool kWithD, bool kWithR>
__device__ __forceinline__ QueryStats query_stats(const float* st, const float* dvec,
                                                  const float* rvec, int64_t i, int64_t n) {
  const bool ok = i < n;
  QueryStats q;
  q.la = ok ? st[i] : 0.f;
  q.lb = ok ? st[n + i] : 0.f;
  q.inv_l = ok ? 1.f / st[2 * n + i] : 0.f;
  q.dv = (kWithD && ok) ? dvec[i] : 0.f;
  q.rv = (kWithR && rvec != nullptr && ok) ? rvec[i] : 0.f;
  return q;
}

// The backward's element-wise step for a (query i, key j) pair from its recomputed
// scores a, b and ds = grad_o_i . mu_j (docs/kernels.md):
//   p = Sx Sg, s = exp(p) / L_i, pdp = p dp = p s (ds - D_i),
//   da = pdp - Sx R_i, db = pdp - Sg R_i.
struct PairGrads {
  float p, s, pdp, da, db;
};

__device__ __forceinline__ PairGrads pair_grads(float a, float b, float ds, const QueryStats& q) {
  const float xa = a - q.la, xb = b - q.lb;
  PairGrads g;
  g.p = __expf(xa + xb);
  g.s = __expf(g.p) * q.inv_l;
  g.pdp = g.p * g.s * (ds - q.dv);
  g.da = g.pdp - __expf(xa) * q.rv;  // da = p dp - Sx R
  g.db = g.pdp - __expf(xb) * q.rv;  // db = p dp - Sg R
  return g;
}

// ---------------------------------------------------------------- operand rows

// theta.. mu of batch element b, for operands of `rows` rows and widths d, dg, c (the
// sizes, or for the tensor-core backward the padded sizes).  Built from a kernel's
// __restrict__ parameters (the pointers keep their provenance).
template <typename T>
struct BatchInputs {
  const T *theta, *phi, *eta, *rho, *mu;

  __device__ __forceinline__ BatchInputs(const T* theta_, const T* phi_, const T* eta_,
                                         const T* rho_, const T* mu_, int64_t b, int64_t rows,
                                         int64_t d, int64_t dg, int64_t c)
      : theta(theta_ + b * rows * d),
        phi(phi_ + b * rows * d),
        eta(eta_ + b * rows * dg),
        rho(rho_ + b * rows * dg),
        mu(mu_ + b * rows * c) {}
};

// A launcher's view of SpatialParams' untyped inputs.
template <typename T>
inline const T* typed(const void* x) {
  return static_cast<const T*>(x);
}

// ---------------------------------------------------------------- WMMA building blocks

namespace wm = nvcuda::wmma;
using FragAcc = wm::fragment<wm::accumulator, 16, 16, 16, float>;

// acc += X[16 rows][kpad] . Y[16 rows][kpad]^T, both row-major with leading dimension ld
// (a 16x16 block of scores over kpad features, kpad a multiple of 16).
template <typename T>
__device__ __forceinline__ void dot_block(FragAcc& acc, const T* x, const T* y, int64_t ld,
                                          int64_t kpad) {
  for (int64_t k = 0; k < kpad; k += 16) {
    wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::row_major> fa;
    wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::col_major> fb;
    wm::load_matrix_sync(fa, x + k, static_cast<unsigned>(ld));
    wm::load_matrix_sync(fb, y + k, static_cast<unsigned>(ld));  // B(k, j) = Y[j][k]
    wm::mma_sync(acc, fa, fb, acc);
  }
}

// Lane l of a warp handles row l/2, 8 columns 8(l%2).. of a 16x16 tile in its element-wise
// steps, visiting them in an order rotated by l/4: at step t the 32 lanes then read 32
// different banks of a float tile (unrotated: 4 banks, 8-way conflicts) and store a
// 16-bit tile of leading dimension 72 or 24 with at most 2-way conflicts (4-way
// unrotated); those leading dimensions keep the fragment loads conflict-free.
__device__ __forceinline__ int rotated_col(int lane, int t) {
  return (lane & 1) * 8 + ((t + (lane >> 2)) & 7);
}

// Whether the device runs code built from compute_80+ for `kernel` (a build for older
// virtual architectures only, JIT-compiled from PTX, holds just the __trap() stub of the
// tensor-core kernels).
template <typename K>
inline bool runs_sm80_code(K kernel) {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the (non-sticky) error for later checks
    return false;
  }
  return attr.ptxVersion >= 80;
}

}  // namespace ggnet::cuda
