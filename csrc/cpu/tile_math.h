// Element-wise tile routines of the fused CPU spatial kernel (no torch headers).
//
// A tile is a row-major nq x nk block of scores (queries x keys) with leading dimension
// nk.  float32 routines use a vectorisable exp (Cephes-style range reduction + degree-6
// polynomial, ~1 ulp) and a Taylor expm1 for arguments in [0, 1]; on x86-64 Linux with
// GCC each routine is compiled for AVX-512, AVX2+FMA and baseline SSE2 and chosen at
// load time (target_clones), so the wheel runs everywhere.  float64 routines call the C
// library (they exist for gradcheck, not for speed).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define GGNET_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GGNET_MULTIVERSION
#endif

#if defined(_OPENMP)
#define GGNET_PRAGMA(x) _Pragma(#x)
#define GGNET_SIMD GGNET_PRAGMA(omp simd)
#define GGNET_SIMD_SUM(v) GGNET_PRAGMA(omp simd reduction(+ : v))
#define GGNET_SIMD_MAX(v) GGNET_PRAGMA(omp simd reduction(max : v))
#else
#define GGNET_SIMD
#define GGNET_SIMD_SUM(v)
#define GGNET_SIMD_MAX(v)
#endif

#define GGNET_INLINE inline __attribute__((always_inline))

namespace ggnet::cpu {

// exp(x) for float; inputs below -87 return ~1.6e-38 instead of 0 (harmless here: every
// argument is a log-probability or a logit in [0, 1]).
GGNET_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float kf = (x * 1.44269504088896341f + magic) - magic;
  float r = x - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(kf) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// expm1(p) for p in [0, 1] (Taylor to p^11: truncation < 2.1e-9 at p = 1), keeping full
// relative precision for small p -- the low-precision-safe weights of kernels.md.
GGNET_INLINE float expm1_unit(float p) {
  float y = 1.0f / 39916800.0f;
  y = y * p + 1.0f / 3628800.0f;
  y = y * p + 1.0f / 362880.0f;
  y = y * p + 1.0f / 40320.0f;
  y = y * p + 1.0f / 5040.0f;
  y = y * p + 1.0f / 720.0f;
  y = y * p + 1.0f / 120.0f;
  y = y * p + 1.0f / 24.0f;
  y = y * p + 1.0f / 6.0f;
  y = y * p + 0.5f;
  y = y * p + 1.0f;
  return y * p;
}

GGNET_INLINE double exp_approx(double x) { return std::exp(x); }
GGNET_INLINE double expm1_unit(double p) { return std::expm1(p); }

// Largest entry of row[0:nk] (-inf for nk = 0).
template <typename T>
GGNET_INLINE T row_max(const T* row, std::int64_t nk) {
  T mx = -std::numeric_limits<T>::infinity();
  GGNET_SIMD_MAX(mx)
  for (std::int64_t j = 0; j < nk; ++j) mx = row[j] > mx ? row[j] : mx;
  return mx;
}

// ---- pass 1: online row logsumexp over one key block --------------------------------
// For each row i: m_i <- max(m_i, max_j a_ij); s_i <- s_i e^{m_old - m_i} + sum_j e^{a_ij - m_i}.
template <typename T>
GGNET_INLINE void lse_update_impl(const T* a, std::int64_t nq, std::int64_t nk, T* m, T* s) {
  for (std::int64_t i = 0; i < nq; ++i) {
    const T* row = a + i * nk;
    const T mx = row_max(row, nk);
    const T m_new = mx > m[i] ? mx : m[i];
    T sum = 0;
    GGNET_SIMD_SUM(sum)
    for (std::int64_t j = 0; j < nk; ++j) sum += exp_approx(row[j] - m_new);
    s[i] = s[i] * std::exp(m[i] - m_new) + sum;  // m[i] = -inf at start: exp -> 0
    m[i] = m_new;
  }
}

// ---- pass 2: the outer-softmax weights of one key block ------------------------------
// a <- e_ij = expm1(p_ij), p_ij = exp(a_ij + b_ij - lse_a_i - lse_b_i); esum_i += sum_j e_ij.
template <typename T>
GGNET_INLINE void fwd_weights_impl(T* a, const T* b, std::int64_t nq, std::int64_t nk,
                                   const T* lse_a, const T* lse_b, T* esum) {
  for (std::int64_t i = 0; i < nq; ++i) {
    T* ra = a + i * nk;
    const T* rb = b + i * nk;
    const T c = lse_a[i] + lse_b[i];
    T sum = 0;
    GGNET_SIMD_SUM(sum)
    for (std::int64_t j = 0; j < nk; ++j) {
      const T e = expm1_unit(exp_approx(ra[j] + rb[j] - c));
      ra[j] = e;
      sum += e;
    }
    esum[i] += sum;
  }
}

// ---- backward: one tile, in two steps ------------------------------------------------
// Sx = e^{a - lse_a}, Sg = e^{b - lse_b}, p = Sx Sg, s = e^p / L = (1 + expm1(p)) / L,
// dp = s (ds - D), R_i = sum_j p dp, da = p dp - Sx R, db = p dp - Sg R.
//
// bwd_prepare -- in: a (theta.phi), b (eta.rho), ds (do.mu); per-row lse_a, lse_b, L, D.
//   Out: a <- Sx, b <- Sg, ds <- dp, and R_i += sum_j p_ij dp_ij.
template <typename T>
GGNET_INLINE void bwd_prepare_impl(T* a, T* b, T* ds, std::int64_t nq, std::int64_t nk,
                                   const T* lse_a, const T* lse_b, const T* L, const T* D, T* R) {
  for (std::int64_t i = 0; i < nq; ++i) {
    T* ra = a + i * nk;
    T* rb = b + i * nk;
    T* rs = ds + i * nk;
    const T la = lse_a[i], lb = lse_b[i], inv_l = T(1) / L[i], d = D[i];
    T sum = 0;
    GGNET_SIMD_SUM(sum)
    for (std::int64_t j = 0; j < nk; ++j) {
      const T sx = exp_approx(ra[j] - la);
      const T sg = exp_approx(rb[j] - lb);
      const T p = sx * sg;
      const T dp = (T(1) + expm1_unit(p)) * inv_l * (rs[j] - d);
      sum += p * dp;
      ra[j] = sx;
      rb[j] = sg;
      rs[j] = dp;
    }
    R[i] += sum;
  }
}

// bwd_finish -- in: the output of bwd_prepare and the complete R.
//   Out: a <- da, b <- db, ds <- s (the weights of dmu = s^T do).
template <typename T>
GGNET_INLINE void bwd_finish_impl(T* a, T* b, T* ds, std::int64_t nq, std::int64_t nk, const T* L,
                                  const T* R) {
  for (std::int64_t i = 0; i < nq; ++i) {
    T* ra = a + i * nk;
    T* rb = b + i * nk;
    T* rs = ds + i * nk;
    const T inv_l = T(1) / L[i], r = R[i];
    GGNET_SIMD
    for (std::int64_t j = 0; j < nk; ++j) {
      const T sx = ra[j], sg = rb[j];
      const T p = sx * sg;
      const T pdp = p * rs[j];
      ra[j] = pdp - sx * r;
      rb[j] = pdp - sg * r;
      rs[j] = (T(1) + expm1_unit(p)) * inv_l;
    }
  }
}

// ---- joint softmax (combine="joint"): W = softmax_j(s), s = a + b --------------------
// joint_fwd_block -- in: s, one key block of scores; per-row running max m and sum l.
//   Out: s <- exp(s - m_new), l <- l e^{m - m_new} + sum_j s, m <- m_new and
//   alpha_i = e^{m_old - m_new}, the factor the caller applies to its value accumulator.
template <typename T>
GGNET_INLINE void joint_fwd_block_impl(T* s, std::int64_t nq, std::int64_t nk, T* m, T* l,
                                       T* alpha) {
  for (std::int64_t i = 0; i < nq; ++i) {
    T* row = s + i * nk;
    const T mx = row_max(row, nk);
    const T m_new = mx > m[i] ? mx : m[i];
    T sum = 0;
    GGNET_SIMD_SUM(sum)
    for (std::int64_t j = 0; j < nk; ++j) {
      const T w = exp_approx(row[j] - m_new);
      row[j] = w;
      sum += w;
    }
    alpha[i] = std::exp(m[i] - m_new);  // m[i] = -inf at start: 0
    l[i] = l[i] * alpha[i] + sum;
    m[i] = m_new;
  }
}

// joint_bwd_tile -- in: s (scores), dp = do . mu; per-row lse and D_i = do_i . o_i.
//   Out: s <- W = exp(s - lse), dp <- dz = W (dp - D).
template <typename T>
GGNET_INLINE void joint_bwd_tile_impl(T* s, T* dp, std::int64_t nq, std::int64_t nk, const T* lse,
                                      const T* D) {
  for (std::int64_t i = 0; i < nq; ++i) {
    T* rs = s + i * nk;
    T* rd = dp + i * nk;
    const T l = lse[i], d = D[i];
    GGNET_SIMD
    for (std::int64_t j = 0; j < nk; ++j) {
      const T w = exp_approx(rs[j] - l);
      rs[j] = w;
      rd[j] = w * (rd[j] - d);
    }
  }
}

// Multiversioned float32 entry points and plain float64 ones (defined in tile_math.cpp).
void lse_update(const float* a, std::int64_t nq, std::int64_t nk, float* m, float* s);
void lse_update(const double* a, std::int64_t nq, std::int64_t nk, double* m, double* s);
void fwd_weights(float* a, const float* b, std::int64_t nq, std::int64_t nk, const float* lse_a,
                 const float* lse_b, float* esum);
void fwd_weights(double* a, const double* b, std::int64_t nq, std::int64_t nk, const double* lse_a,
                 const double* lse_b, double* esum);
void bwd_prepare(float* a, float* b, float* ds, std::int64_t nq, std::int64_t nk,
                 const float* lse_a, const float* lse_b, const float* L, const float* D, float* R);
void bwd_prepare(double* a, double* b, double* ds, std::int64_t nq, std::int64_t nk,
                 const double* lse_a, const double* lse_b, const double* L, const double* D,
                 double* R);
void bwd_finish(float* a, float* b, float* ds, std::int64_t nq, std::int64_t nk, const float* L,
                const float* R);
void bwd_finish(double* a, double* b, double* ds, std::int64_t nq, std::int64_t nk, const double* L,
                const double* R);

void joint_fwd_block(float* s, std::int64_t nq, std::int64_t nk, float* m, float* l, float* alpha);
void joint_fwd_block(double* s, std::int64_t nq, std::int64_t nk, double* m, double* l,
                     double* alpha);
void joint_bwd_tile(float* s, float* dp, std::int64_t nq, std::int64_t nk, const float* lse,
                    const float* D);
void joint_bwd_tile(double* s, double* dp, std::int64_t nq, std::int64_t nk, const double* lse,
                    const double* D);

}  // namespace ggnet::cpu
