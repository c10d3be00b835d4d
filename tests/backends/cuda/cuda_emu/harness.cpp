// Runs the CUDA launchers of csrc/cuda/ under the host emulation (emu_cuda.h) and
// compares them with a float64 implementation of docs/kernels.md's formulas.
// Prints one line per case; exit status = number of failed checks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/launchers.h"

using namespace ggnet::cuda;
using V = std::vector<float>;
using D = std::vector<double>;

namespace {

int failures = 0;

double rel(const V& x, const D& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void check(const char* what, double err, double tol) {
  const bool ok = err < tol;
  std::printf(" %s %.2e%s", what, err, ok ? "" : " (FAIL)");
  failures += !ok;
}

template <typename T> T from_f(float x);
template <> float from_f<float>(float x) { return x; }
template <> __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
float to_f(float x) { return x; }
float to_f(__half x) { return __half2float(x); }
float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> DType dtype_of();
template <> DType dtype_of<float>() { return DType::kFloat32; }
template <> DType dtype_of<__half>() { return DType::kFloat16; }
template <> DType dtype_of<__nv_bfloat16>() { return DType::kBFloat16; }
template <typename T> const char* name_of();
template <> const char* name_of<float>() { return "f32"; }
template <> const char* name_of<__half>() { return "f16"; }
template <> const char* name_of<__nv_bfloat16>() { return "bf16"; }

// Spatial operator: forward (delta and stats) and every gradient.
// tensor_cores: pass device_major = 8 (WMMA paths for bf16), else 0 (scalar).
template <typename T>
void spatial_case(int B, int N, int d, int dg, int C, unsigned seed, bool tensor_cores,
                  double delta_tol) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto rnd = [&](size_t n, float s, float off) {
    std::vector<T> v(n);
    for (auto& x : v) x = from_f<T>(s * nd(gen) + off);
    return v;
  };
  // score standard deviation <= ~9 (as in the CPU tests): beyond that the softmaxes
  // saturate and da = p dp - Sx R cancels to far below its terms (ill-conditioned in float32)
  const auto sc = [](int k) { return 1.5f * std::min(1.f, std::pow(16.f / k, 0.25f)); };
  auto th = rnd(size_t(B) * N * d, sc(d), 0), ph = rnd(size_t(B) * N * d, sc(d), 0);
  auto et = rnd(size_t(B) * N * dg, sc(dg), 0), rh = rnd(size_t(B) * N * dg, sc(dg), 0);
  auto mu = rnd(size_t(B) * N * C, 1.5f, 2.f);  // mean offset: L must match the weights
  V go(size_t(B) * N * C);
  for (auto& x : go) x = nd(gen);
  auto f = [](const std::vector<T>& v, size_t i) { return double(to_f(v[i])); };

  // float64 reference, explicit formulas (docs/kernels.md)
  D o_ref(size_t(B) * N * C), st_ref(size_t(B) * 3 * N), musumd(size_t(B) * C, 0.0);
  D dth(th.size(), 0), dph(ph.size(), 0), det(et.size(), 0), drh(rh.size(), 0), dmu(mu.size(), 0);
  for (int b = 0; b < B; ++b) {
    const size_t q = size_t(b) * N;
    for (int j = 0; j < N; ++j)
      for (int c = 0; c < C; ++c) musumd[size_t(b) * C + c] += f(mu, (q + j) * C + c);
    std::vector<D> P(N, D(N)), S(N, D(N)), Sx(N, D(N)), Sg(N, D(N));
    for (int i = 0; i < N; ++i) {
      D A(N), Bm(N);
      for (int j = 0; j < N; ++j) {
        double a = 0, bb = 0;
        for (int k = 0; k < d; ++k) a += f(th, (q + i) * d + k) * f(ph, (q + j) * d + k);
        for (int k = 0; k < dg; ++k) bb += f(et, (q + i) * dg + k) * f(rh, (q + j) * dg + k);
        A[j] = a;
        Bm[j] = bb;
      }
      const double ma = *std::max_element(A.begin(), A.end());
      const double mb = *std::max_element(Bm.begin(), Bm.end());
      double sa = 0, sb = 0, L = 0;
      for (int j = 0; j < N; ++j) sa += std::exp(A[j] - ma), sb += std::exp(Bm[j] - mb);
      const double la = ma + std::log(sa), lb = mb + std::log(sb);
      for (int j = 0; j < N; ++j) {
        Sx[i][j] = std::exp(A[j] - la);
        Sg[i][j] = std::exp(Bm[j] - lb);
        P[i][j] = Sx[i][j] * Sg[i][j];
        L += std::exp(P[i][j]);
      }
      for (int j = 0; j < N; ++j) S[i][j] = std::exp(P[i][j]) / L;
      st_ref[size_t(b) * 3 * N + i] = la;
      st_ref[size_t(b) * 3 * N + N + i] = lb;
      st_ref[size_t(b) * 3 * N + 2 * N + i] = L;
      for (int c = 0; c < C; ++c) {
        double s = 0;
        for (int j = 0; j < N; ++j) s += S[i][j] * f(mu, (q + j) * C + c);
        o_ref[(q + i) * C + c] = s;
      }
    }
    for (int i = 0; i < N; ++i) {
      double Dv = 0, R = 0;
      for (int c = 0; c < C; ++c) Dv += go[(q + i) * C + c] * o_ref[(q + i) * C + c];
      D dp(N);
      for (int j = 0; j < N; ++j) {
        double ds = 0;
        for (int c = 0; c < C; ++c) ds += go[(q + i) * C + c] * f(mu, (q + j) * C + c);
        dp[j] = S[i][j] * (ds - Dv);
        R += P[i][j] * dp[j];
        for (int c = 0; c < C; ++c) dmu[(q + j) * C + c] += S[i][j] * go[(q + i) * C + c];
      }
      for (int j = 0; j < N; ++j) {
        const double da = P[i][j] * dp[j] - Sx[i][j] * R, db = P[i][j] * dp[j] - Sg[i][j] * R;
        for (int k = 0; k < d; ++k) {
          dth[(q + i) * d + k] += da * f(ph, (q + j) * d + k);
          dph[(q + j) * d + k] += da * f(th, (q + i) * d + k);
        }
        for (int k = 0; k < dg; ++k) {
          det[(q + i) * dg + k] += db * f(rh, (q + j) * dg + k);
          drh[(q + j) * dg + k] += db * f(et, (q + i) * dg + k);
        }
      }
    }
  }

  const SpatialSizes sz = make_spatial_sizes(B, N, d, dg, C);
  const int major = tensor_cores ? 8 : 0;
  const bool tc = spatial_fwd_tc_supported(dtype_of<T>(), sz, major);
  std::printf("%-4s %-6s B=%d N=%d d=%d dg=%d C=%d:", name_of<T>(), tc ? "tc" : "scalar", B, N,
              d, dg, C);
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;  // the only tensor-core dtype
  if (tc != (tensor_cores && kBf16 && C <= 256 && d <= 256 && dg <= 256)) {
    std::printf(" (FAIL: unexpected path)");
    ++failures;
  }
  V musum(size_t(B) * C);
  for (size_t k = 0; k < musum.size(); ++k) musum[k] = float(musumd[k]);
  V o(o_ref.size(), 0.f), st(st_ref.size(), 0.f);
  SpatialParams fp;
  fp.dtype = dtype_of<T>();
  fp.sz = sz;
  fp.set_inputs(th.data(), ph.data(), et.data(), rh.data(), mu.data());
  fp.musum = musum.data();
  fp.o = o.data();
  fp.stats = st.data();
  if (spatial_fwd(fp, major, nullptr) != cudaSuccess) {
    std::printf(" (FAIL: launch)\n");
    ++failures;
    return;
  }
  V dl(o.size()), floor32(o.size());
  D dlr(o.size());
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < N; ++i)
      for (int c = 0; c < C; ++c) {
        const size_t k = (size_t(b) * N + i) * C + c;
        const double m = musumd[size_t(b) * C + c] / N;
        dl[k] = float(o[k] - m);
        dlr[k] = o_ref[k] - m;
        floor32[k] = float(double(float(o_ref[k])) - m);
      }
  const double floor = rel(floor32, dlr);
  check("delta", rel(dl, dlr), delta_tol + 3 * floor);
  check("stats", rel(st, st_ref), tc ? 1e-4 : 1e-6);  // tc: L sums the rounded e
  // backward: tensor cores when the launcher says so (f16/bf16, major 8, sizes), else scalar
  const bool tc_bwd = spatial_bwd_tc_supported(dtype_of<T>(), sz, major);
  const auto r16 = [](int x) { return (x + 15) / 16 * 16; };
  if (tc_bwd != (tensor_cores && kBf16 && C <= 256 && r16(d) <= 256 && r16(dg) <= 256)) {
    std::printf(" (FAIL: unexpected backward path)");
    ++failures;
  }
  V dv(size_t(B) * N), rv(size_t(B) * N), g1(th.size(), 0), g2(ph.size(), 0), g3(et.size(), 0),
      g4(rh.size(), 0), g5(mu.size(), 0);
  for (size_t i = 0; i < dv.size(); ++i) {
    double s = 0;
    for (int c = 0; c < C; ++c) s += double(go[i * C + c]) * o[i * C + c];
    dv[i] = float(s);
  }
  SpatialParams bp;
  bp.dtype = dtype_of<T>();
  bp.sz = sz;
  bp.stats = st.data();
  bp.dvec = dv.data();
  bp.rvec = rv.data();
  bp.set_grads(g1.data(), g2.data(), g3.data(), g4.data(), g5.data());
  if (tc_bwd) {
    const int npad = (N + 63) / 64 * 64;
    const auto pad = [&](const std::vector<T>& x, int cols) {
      std::vector<T> out(size_t(B) * npad * r16(cols), from_f<T>(0.f));
      for (int b = 0; b < B; ++b)
        for (int i = 0; i < N; ++i)
          for (int k = 0; k < cols; ++k)
            out[(size_t(b) * npad + i) * r16(cols) + k] = x[(size_t(b) * N + i) * cols + k];
      return out;
    };
    std::vector<T> hi(go.size()), lo(go.size());
    for (size_t k = 0; k < go.size(); ++k) {
      hi[k] = from_f<T>(go[k]);
      lo[k] = from_f<T>(go[k] - to_f(hi[k]));
    }
    const auto thp = pad(th, d), php = pad(ph, d), etp = pad(et, dg), rhp = pad(rh, dg);
    const auto mup = pad(mu, C), hip = pad(hi, C), lop = pad(lo, C);
    bp.set_inputs(thp.data(), php.data(), etp.data(), rhp.data(), mup.data());
    bp.do_hi = hip.data();
    bp.do_lo = lop.data();
    spatial_bwd_tc(bp, nullptr);
  } else {
    bp.set_inputs(th.data(), ph.data(), et.data(), rh.data(), mu.data());
    bp.grad_o = go.data();
    spatial_bwd_scalar(bp, nullptr);
  }
  // tensor cores: weights and grad_o enter as hi + lo pairs (~16 bits)
  const double gtol = tc_bwd ? 2e-3 : 1e-4;
  std::printf(" |%s bwd:", tc_bwd ? "tc" : "scalar");
  check("dtheta", rel(g1, dth), gtol);
  check("dphi", rel(g2, dph), gtol);
  check("deta", rel(g3, det), gtol);
  check("drho", rel(g4, drh), gtol);
  check("dmu", rel(g5, dmu), gtol);
  std::printf("  [float32 output floor %.1e]\n", floor);
}

void channel_case(int B, int C, bool max_minus, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, 3.f);
  const size_t n = size_t(B) * C * C;
  V a(n), b(n);
  for (auto& x : a) x = nd(gen);
  for (auto& x : b) x = nd(gen);
  V sz(n), sg(n), m(n), e(n), ls(size_t(B) * C);
  channel_softmaxes(a.data(), b.data(), sz.data(), sg.data(), m.data(), B, C, nullptr);
  channel_outer(m.data(), e.data(), ls.data(), max_minus, B, C, nullptr);
  D szr(n), sgr(n), mr(n), er(n), lr(size_t(B) * C);
  for (size_t r = 0; r < size_t(B) * C; ++r) {
    double ma = -1e300, mb = -1e300, sa = 0, sb = 0, mx = -1e300, L = C;
    for (int k = 0; k < C; ++k) ma = std::max(ma, double(a[r * C + k])), mb = std::max(mb, double(b[r * C + k]));
    for (int k = 0; k < C; ++k) sa += std::exp(a[r * C + k] - ma), sb += std::exp(b[r * C + k] - mb);
    for (int k = 0; k < C; ++k) {
      szr[r * C + k] = std::exp(a[r * C + k] - ma) / sa;
      sgr[r * C + k] = std::exp(b[r * C + k] - mb) / sb;
      mr[r * C + k] = szr[r * C + k] * sgr[r * C + k];
      mx = std::max(mx, double(m[r * C + k]));
    }
    for (int k = 0; k < C; ++k) {
      er[r * C + k] = std::expm1(max_minus ? mx - m[r * C + k] : double(m[r * C + k]));
      L += er[r * C + k];
    }
    lr[r] = L;
  }
  std::printf("channel B=%d C=%d max_minus=%d:", B, C, int(max_minus));
  check("sz", rel(sz, szr), 1e-5);
  check("sg", rel(sg, sgr), 1e-5);
  check("m", rel(m, mr), 1e-5);
  check("e", rel(e, er), 1e-5);
  check("lsum", rel(ls, lr), 1e-6);
  std::printf("\n");
}

}  // namespace

int main() {
  // scalar path: forward and all gradients (float32 and half inputs)
  spatial_case<float>(2, 37, 5, 3, 7, 1, false, 1e-3);
  spatial_case<float>(2, 130, 33, 17, 70, 2, false, 1e-3);
  spatial_case<float>(1, 64, 16, 16, 64, 3, false, 1e-3);
  spatial_case<float>(1, 65, 1, 1, 1, 4, false, 1e-3);
  spatial_case<__nv_bfloat16>(2, 70, 9, 8, 20, 5, false, 1e-3);
  // tensor cores (bf16 only; e rounded to bf16 in the forward, hi + lo splits backward)
  spatial_case<__nv_bfloat16>(2, 37, 5, 3, 7, 6, true, 1e-2);
  spatial_case<__half>(2, 37, 5, 3, 7, 7, true, 1e-3);  // float16: scalar even on sm_80
  spatial_case<__nv_bfloat16>(2, 130, 33, 17, 70, 8, true, 1e-2);
  spatial_case<__nv_bfloat16>(1, 140, 64, 32, 130, 9, true, 1e-2);
  spatial_case<__nv_bfloat16>(1, 70, 8, 8, 300, 10, true, 1e-3);  // C > 256: scalar
  spatial_case<__nv_bfloat16>(1, 50, 136, 130, 24, 11, true, 1e-2);  // d + dg > 256: split tc bwd
  spatial_case<__nv_bfloat16>(1, 40, 264, 8, 24, 12, true, 1e-2);  // d > 256: scalar bwd
  // forward warp pairs: N < 32 leaves half 1 without keys; C <= 64 with 3 fragments (2 + 1)
  spatial_case<__nv_bfloat16>(1, 20, 8, 8, 48, 13, true, 1e-2);
  spatial_case<__nv_bfloat16>(1, 66, 16, 16, 256, 14, true, 1e-2);  // C = 256: 8 fragments each
  // channel operator's fused kernels (one block per row; C > 256 loops)
  channel_case(2, 13, false, 11);
  channel_case(2, 13, true, 12);
  channel_case(1, 300, true, 13);
  std::printf(failures ? "FAILED: %d checks\n" : "OK\n", failures);
  return failures;
}
