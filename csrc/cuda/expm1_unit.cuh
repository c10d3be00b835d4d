// expm1(p) for p in [0, 1] without the libdevice expm1f (a range reduction, an
// exponential and a correction; --use_fast_math does not replace it): a Taylor
// polynomial in Horner form, all FMAs, full relative precision for tiny p (where
// exp(p) - 1 would lose every digit).  Truncation, relative to expm1(p) >= p, is below
// p^(K+1) / (K+1)! * e / (e - 1): at p = 1, 4e-5 for K = 7 (enough for weights rounded to
// 16 bits right after: bfloat16 keeps 2^-9) and 7e-8 for K = 10 (float32 weights).  The
// spatial operator's p = exp((a - lse_a) + (b - lse_b)) is in (0, 1] by construction.
#pragma once

namespace ggnet::cuda {

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

}  // namespace ggnet::cuda
