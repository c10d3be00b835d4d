// Fused guided spatial attention on the CPU: forward and backward (kernels.md contract).
//
// Work is split into tiles of queries x keys.  The score and value products of a tile are
// GEMM calls on block views (tile_gemm.h: oneDNN for float32, else ATen's BLAS);
// the exponentials run in the vectorised routines of tile_math.h.  Each thread owns three
// score tiles of at most tile_budget_bytes() (16 MiB) in all: nothing N x N is ever
// allocated.  While a whole strip of query rows (all N keys; kBQ = 64 rows, or kBQB = 128
// in the backward up to N = 10922) fits the budget -- N <= 21845 in float32 -- a tile is
// that strip, so each product is one GEMM call and the second pass reuses the scores of
// the first; beyond it the tiles stream over key blocks and the second pass recomputes
// them.
//
// Forward, one task per (batch, query block), OpenMP via at::parallel_for:
//   pass 1 over key blocks: online lse_a and lse_b;
//   pass 2 over key blocks: e = expm1(p), L += sum e, acc += e @ mu;
//   o = (sum_j mu_j + acc) / L.
// Backward, one task per (batch, group of query blocks), kGroups = 4 fixed groups:
//   per query block, an R pass over key blocks (scores a, b and ds = do . mu, once each;
//   R_i = sum_j p_ij dp_ij needs a whole row), then a gradient pass over the same tiles:
//   dtheta += da @ phi, deta += db @ rho for the block's own rows, and the key-side sums
//   dphi += da^T @ theta, drho += db^T @ eta, dmu += s^T @ do into the group's
//   accumulator (group 0: the outputs; group g > 0: a workspace slice [N, d + dg + C]),
//   added to the outputs in the order g = 1, 2, 3.  Every product runs once: 2N^2 x
//   (3 (d + dg) + 2 C) flops with strips.  Groups, block order and reduction order do not
//   depend on the thread count, so results are bitwise identical for any thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "cpu/tile_gemm.h"
#include "cpu/tile_math.h"
#include "cpu/tiling.h"
#include "ggnet_ops.h"

namespace ggnet::cpu {
namespace {

template <typename T>
void spatial_forward_impl(const at::Tensor& th, const at::Tensor& ph, const at::Tensor& et,
                          const at::Tensor& rh, const at::Tensor& mu, at::Tensor& o,
                          at::Tensor& stats) {
  const int64_t batch = th.size(0), n = th.size(1), c = mu.size(2);
  const int64_t bq = std::min(kBQ, n);
  const Blocks blk(n, bq, tile_len(n, bq, sizeof(T)));
  const TileGemm gemm(th.scalar_type());
  const at::Tensor musum = mu.sum(1);  // [B, C]
  const T* musum_p = musum.data_ptr<T>();
  T* o_p = o.data_ptr<T>();
  T* st_p = stats.data_ptr<T>();

  at::parallel_for(0, batch * blk.nqb, 1, [&](int64_t begin, int64_t end) {
    const auto opts = th.options();
    at::Tensor sa = at::empty({blk.bq * blk.bk}, opts), sb = at::empty({blk.bq * blk.bk}, opts);
    at::Tensor acc = at::empty({blk.bq, c}, opts);
    std::vector<T> ma(blk.bq), sa_sum(blk.bq), mb(blk.bq), sb_sum(blk.bq), lse_a(blk.bq),
        lse_b(blk.bq), esum(blk.bq);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blk.nqb, qb = task % blk.nqb;
      const int64_t q0 = blk.q0(qb), nq = blk.nq(qb);
      const at::Tensor thb = th[b], phb = ph[b], etb = et[b], rhb = rh[b], mub = mu[b];
      std::fill(ma.begin(), ma.end(), -std::numeric_limits<T>::infinity());
      std::fill(mb.begin(), mb.end(), -std::numeric_limits<T>::infinity());
      std::fill(sa_sum.begin(), sa_sum.end(), T(0));
      std::fill(sb_sum.begin(), sb_sum.end(), T(0));
      // pass 1: row logsumexps of both score matrices
      for (int64_t kb = 0; kb < blk.nkb; ++kb) {
        const int64_t k0 = blk.k0(kb), nk = blk.nk(kb);
        at::Tensor ta = tile_view(sa, nq, nk), tb = tile_view(sb, nq, nk);
        scores(gemm, ta, thb, phb, q0, nq, k0, nk);
        scores(gemm, tb, etb, rhb, q0, nq, k0, nk);
        lse_update(ta.data_ptr<T>(), nq, nk, ma.data(), sa_sum.data());
        lse_update(tb.data_ptr<T>(), nq, nk, mb.data(), sb_sum.data());
      }
      for (int64_t i = 0; i < nq; ++i) {
        lse_a[i] = ma[i] + std::log(sa_sum[i]);
        lse_b[i] = mb[i] + std::log(sb_sum[i]);
        esum[i] = T(0);
      }
      // pass 2: e = expm1(p) and acc = sum_j e_ij mu_j
      at::Tensor acc_t = acc.narrow(0, 0, nq);
      acc_t.zero_();
      for (int64_t kb = 0; kb < blk.nkb; ++kb) {
        const int64_t k0 = blk.k0(kb), nk = blk.nk(kb);
        at::Tensor ta = tile_view(sa, nq, nk), tb = tile_view(sb, nq, nk);
        if (blk.nkb > 1) {  // one key block: the tiles still hold pass 1's scores
          scores(gemm, ta, thb, phb, q0, nq, k0, nk);
          scores(gemm, tb, etb, rhb, q0, nq, k0, nk);
        }
        fwd_weights(ta.data_ptr<T>(), tb.data_ptr<T>(), nq, nk, lse_a.data(), lse_b.data(),
                    esum.data());
        gemm(acc_t, ta, mub.narrow(0, k0, nk), /*accumulate=*/true);
      }
      const T* acc_p = acc_t.data_ptr<T>();
      const T* ms = musum_p + b * c;
      for (int64_t i = 0; i < nq; ++i) {
        const T l = static_cast<T>(n) + esum[i];
        const T inv_l = T(1) / l;
        T* orow = o_p + (b * n + q0 + i) * c;
        const T* arow = acc_p + i * c;
        for (int64_t k = 0; k < c; ++k) orow[k] = (ms[k] + arow[k]) * inv_l;
        st_p[(b * 3 + 0) * n + q0 + i] = lse_a[i];
        st_p[(b * 3 + 1) * n + q0 + i] = lse_b[i];
        st_p[(b * 3 + 2) * n + q0 + i] = l;
      }
    }
  });
}

// The backward's key-side gradients (dphi, drho, dmu) are sums over all queries.  Query
// blocks are split into kGroups fixed groups; group 0 accumulates into the outputs, group
// g > 0 into its own workspace slice, added to the outputs in the order g = 1, 2, ...
// Neither the groups nor that order depend on the thread count.
template <typename T>
void spatial_backward_impl(const at::Tensor& go, const at::Tensor& th, const at::Tensor& ph,
                           const at::Tensor& et, const at::Tensor& rh, const at::Tensor& mu,
                           const at::Tensor& stats, const at::Tensor& dvec, at::Tensor& dth,
                           at::Tensor& dph, at::Tensor& det, at::Tensor& drh, at::Tensor& dmu) {
  const int64_t batch = th.size(0), n = th.size(1);
  const int64_t bq = backward_rows(n, sizeof(T));
  const Blocks blk(n, bq, tile_len(n, bq, sizeof(T)));
  const int64_t groups = std::min(kGroups, blk.nqb);
  const TileGemm gemm(th.scalar_type());
  const T* st_p = stats.data_ptr<T>();
  const T* d_p = dvec.data_ptr<T>();
  const auto opts = th.options();
  // Workspace of groups 1 .. groups-1: [B, groups-1, N, d + dg + C].
  const at::Tensor ws_ph = at::zeros({batch, groups - 1, n, ph.size(2)}, opts),
                   ws_rh = at::zeros({batch, groups - 1, n, rh.size(2)}, opts),
                   ws_mu = at::zeros({batch, groups - 1, n, mu.size(2)}, opts);

  at::parallel_for(0, batch * groups, 1, [&](int64_t begin, int64_t end) {
    at::Tensor sa = at::empty({blk.bq * blk.bk}, opts), sb = at::empty({blk.bq * blk.bk}, opts),
               sd = at::empty({blk.bq * blk.bk}, opts);
    std::vector<T> r(blk.bq), r_sink(blk.bq);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, g = task % groups;
      const at::Tensor thb = th[b], phb = ph[b], etb = et[b], rhb = rh[b], mub = mu[b], gob = go[b];
      at::Tensor kph = g == 0 ? dph[b] : ws_ph[b][g - 1], krh = g == 0 ? drh[b] : ws_rh[b][g - 1],
                 kmu = g == 0 ? dmu[b] : ws_mu[b][g - 1];
      for (int64_t qb = g * blk.nqb / groups; qb < (g + 1) * blk.nqb / groups; ++qb) {
        const int64_t q0 = blk.q0(qb), nq = blk.nq(qb);
        const T* la = st_p + (b * 3 + 0) * n + q0;
        const T* lb = st_p + (b * 3 + 1) * n + q0;
        const T* ll = st_p + (b * 3 + 2) * n + q0;
        const T* dd = d_p + b * n + q0;
        const at::Tensor thq = thb.narrow(0, q0, nq), etq = etb.narrow(0, q0, nq),
                         goq = gob.narrow(0, q0, nq);
        at::Tensor dthq = dth[b].narrow(0, q0, nq), detq = det[b].narrow(0, q0, nq);
        // Scores, ds = do . mu and bwd_prepare for keys [k0, k0 + nk); R_i += sum p dp.
        const auto prepare = [&](at::Tensor ta, at::Tensor tb, at::Tensor td, int64_t k0,
                                 int64_t nk, T* r_out) {
          scores(gemm, ta, thb, phb, q0, nq, k0, nk);
          scores(gemm, tb, etb, rhb, q0, nq, k0, nk);
          scores(gemm, td, gob, mub, q0, nq, k0, nk);
          bwd_prepare(ta.data_ptr<T>(), tb.data_ptr<T>(), td.data_ptr<T>(), nq, nk, la, lb, ll, dd,
                      r_out);
        };
        // R pass: R_i = sum_j p_ij dp_ij over all keys.
        std::fill(r.begin(), r.end(), T(0));
        for (int64_t kb = 0; kb < blk.nkb; ++kb) {
          const int64_t nk = blk.nk(kb);
          prepare(tile_view(sa, nq, nk), tile_view(sb, nq, nk), tile_view(sd, nq, nk), blk.k0(kb),
                  nk, r.data());
        }
        // Gradient pass: with one key block (a whole row strip) the tiles still hold the
        // prepared values; otherwise they are recomputed.
        for (int64_t kb = 0; kb < blk.nkb; ++kb) {
          const int64_t k0 = blk.k0(kb), nk = blk.nk(kb);
          at::Tensor ta = tile_view(sa, nq, nk), tb = tile_view(sb, nq, nk),
                     td = tile_view(sd, nq, nk);
          if (blk.nkb > 1) prepare(ta, tb, td, k0, nk, r_sink.data());
          bwd_finish(ta.data_ptr<T>(), tb.data_ptr<T>(), td.data_ptr<T>(), nq, nk, ll, r.data());
          gemm(dthq, ta, phb.narrow(0, k0, nk), /*accumulate=*/true);
          gemm(detq, tb, rhb.narrow(0, k0, nk), /*accumulate=*/true);
          at::Tensor kphk = kph.narrow(0, k0, nk), krhk = krh.narrow(0, k0, nk),
                     kmuk = kmu.narrow(0, k0, nk);
          gemm(kphk, ta.t(), thq, /*accumulate=*/true);
          gemm(krhk, tb.t(), etq, /*accumulate=*/true);
          gemm(kmuk, td.t(), goq, /*accumulate=*/true);
        }
      }
    }
  });
  for (int64_t g = 1; g < groups; ++g) {  // fixed order, element-wise adds
    dph.add_(ws_ph.select(1, g - 1));
    drh.add_(ws_rh.select(1, g - 1));
    dmu.add_(ws_mu.select(1, g - 1));
  }
}

std::tuple<at::Tensor, at::Tensor> spatial_fwd_cpu(const at::Tensor& theta, const at::Tensor& phi,
                                                   const at::Tensor& eta, const at::Tensor& rho,
                                                   const at::Tensor& mu) {
  check_spatial_inputs(theta, phi, eta, rho, mu);
  const auto acc = acc_type(theta.scalar_type());
  const at::Tensor th = to_acc(theta, acc), ph = to_acc(phi, acc), et = to_acc(eta, acc),
                   rh = to_acc(rho, acc), m = to_acc(mu, acc);
  at::Tensor o = at::empty({th.size(0), th.size(1), m.size(2)}, th.options());
  at::Tensor stats = at::empty({th.size(0), 3, th.size(1)}, th.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "ggnet_fast::spatial_fwd",
                             [&] { spatial_forward_impl<scalar_t>(th, ph, et, rh, m, o, stats); });
  return {o, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> spatial_bwd_cpu(
    const at::Tensor& grad_o, const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
    const at::Tensor& rho, const at::Tensor& mu, const at::Tensor& o, const at::Tensor& stats) {
  check_spatial_inputs(theta, phi, eta, rho, mu);
  TORCH_CHECK(grad_o.sizes() == mu.sizes(), "spatial_bwd: grad_o must have mu's shape");
  TORCH_CHECK(o.sizes() == mu.sizes(), "spatial_bwd: o must have mu's shape");
  TORCH_CHECK(stats.dim() == 3 && stats.size(0) == theta.size(0) && stats.size(1) == 3 &&
                  stats.size(2) == theta.size(1),
              "spatial_bwd: stats must be [B, 3, N] as returned by spatial_fwd");
  const auto acc = acc_type(theta.scalar_type());
  const at::Tensor th = to_acc(theta, acc), ph = to_acc(phi, acc), et = to_acc(eta, acc),
                   rh = to_acc(rho, acc), m = to_acc(mu, acc), go = to_acc(grad_o, acc),
                   st = to_acc(stats, acc);
  const at::Tensor dvec = (go * o.to(acc)).sum(-1).contiguous();  // D_i = do_i . o_i
  at::Tensor dth = at::zeros_like(th), dph = at::zeros_like(ph), det = at::zeros_like(et),
             drh = at::zeros_like(rh), dmu = at::zeros_like(m);
  AT_DISPATCH_FLOATING_TYPES(acc, "ggnet_fast::spatial_bwd", [&] {
    spatial_backward_impl<scalar_t>(go, th, ph, et, rh, m, st, dvec, dth, dph, det, drh, dmu);
  });
  return {dth.to(theta.scalar_type()), dph.to(phi.scalar_type()), det.to(eta.scalar_type()),
          drh.to(rho.scalar_type()), dmu.to(mu.scalar_type())};
}

}  // namespace

// Which GEMM library the CPU kernels use for tensors of theta's dtype: "onednn" or "blas".
std::string spatial_cpu_gemm(const at::Tensor& theta) {
  return TileGemm(acc_type(theta.scalar_type())).uses_onednn() ? "onednn" : "blas";
}

TORCH_LIBRARY_FRAGMENT(ggnet_fast, m) { m.def("spatial_cpu_gemm(Tensor theta) -> str"); }

TORCH_LIBRARY_IMPL(ggnet_fast, CPU, m) {
  m.impl("spatial_cpu_gemm", &spatial_cpu_gemm);
  m.impl("spatial_fwd", &spatial_fwd_cpu);
  m.impl("spatial_bwd", &spatial_bwd_cpu);
}

}  // namespace ggnet::cpu
