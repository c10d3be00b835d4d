// Fused joint-softmax spatial attention on the CPU (combine="joint", docs/kernels.md):
//
//   o_i = sum_j W_ij mu_j,   W = softmax_j(s),   s = theta phi^T + eta rho^T = q k^T
//
// with q = [theta, eta] and k = [phi, rho] (width K = d + dg, no padding to C): ordinary
// attention with scale 1, computed FlashAttention-style over the tiles of tiling.h.
//
// Forward, one task per (batch, query block; joint_blocks): one pass over key blocks with
// an online softmax (running row max m and sum l; the value accumulator is rescaled by
// e^{m_old - m_new} when the max grows), o = acc / l, lse = m + log l saved: 2 N^2 (K + C)
// flops.
// Backward, one task per (batch, group of query blocks), kGroups fixed groups as in
// spatial_cpu.cpp: per (query block, key block) tile, s = q k^T and dp = do mu^T once
// each, W = exp(s - lse), dz = W (dp - D) with D_i = do_i . o_i, then dmu += W^T do,
// dq += dz k and dk += dz^T q: 2 N^2 (3 K + 2 C) flops, every product once (no second
// pass: the joint softmax needs only D, which the forward's o gives).  The key-side sums
// go to the group's accumulator (group 0: the outputs; g > 0: a workspace slice [N, K + C])
// added in the order g = 1, 2, 3: bitwise identical results for any thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "cpu/tile_gemm.h"
#include "cpu/tile_math.h"
#include "cpu/tiling.h"
#include "ggnet_ops.h"

namespace ggnet::cpu {
namespace {

constexpr int64_t kJointRows = 512;  // most query rows of a tile
constexpr int64_t kJointKeys = 512;  // most keys of a tile

// Tiles of the joint kernels, forward and backward alike: the largest power-of-two row
// count up to kJointRows that leaves at least 8 row blocks per batch element (at least
// kBQ rows), and key tiles of kJointKeys (fewer when the tile budget says so).  A 512 x 512
// float32 score tile (1 MiB with the backward's second one) stays in a core's L2 between
// its exponentials and its products; against whole-row strips of 64 (forward) or 128
// (backward) rows, 512 x 512 tiles measured 21% (forward, d = dg = 128) and 8-14%
// (backward) faster on one thread at N = 4096, C = 256 (docs/cpu_backend.md).  The tiles
// depend on the sizes only, never on the thread count.
Blocks joint_blocks(int64_t n, int64_t elem_size) {
  int64_t bq = kJointRows;
  while (bq > kBQ && bq * 8 > n) bq /= 2;
  bq = std::min(bq, n);
  return Blocks(n, bq, std::min(kJointKeys, tile_len(n, bq, elem_size)));
}

// [theta, eta] or [phi, rho] in the accumulation dtype, contiguous [B, N, d + dg].
at::Tensor concat_acc(const at::Tensor& x, const at::Tensor& y, at::ScalarType acc) {
  return at::cat({x.to(acc), y.to(acc)}, 2).contiguous();
}

template <typename T>
void joint_forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& mu,
                        at::Tensor& o, at::Tensor& lse) {
  const int64_t batch = q.size(0), n = q.size(1), c = mu.size(2);
  const Blocks blk = joint_blocks(n, sizeof(T));
  const TileGemm gemm(q.scalar_type());
  T* o_p = o.data_ptr<T>();
  T* lse_p = lse.data_ptr<T>();

  at::parallel_for(0, batch * blk.nqb, 1, [&](int64_t begin, int64_t end) {
    const auto opts = q.options();
    at::Tensor ss = at::empty({blk.bq * blk.bk}, opts), acc = at::empty({blk.bq, c}, opts);
    std::vector<T> m(blk.bq), l(blk.bq), alpha(blk.bq);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blk.nqb, qb = task % blk.nqb;
      const int64_t q0 = blk.q0(qb), nq = blk.nq(qb);
      const at::Tensor qbt = q[b], kbt = k[b], mub = mu[b];
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      at::Tensor acc_t = acc.narrow(0, 0, nq);
      T* acc_p = acc_t.data_ptr<T>();
      for (int64_t kb = 0; kb < blk.nkb; ++kb) {
        const int64_t k0 = blk.k0(kb), nk = blk.nk(kb);
        at::Tensor ts = tile_view(ss, nq, nk);
        scores(gemm, ts, qbt, kbt, q0, nq, k0, nk);
        joint_fwd_block(ts.data_ptr<T>(), nq, nk, m.data(), l.data(), alpha.data());
        if (kb > 0) {  // the row max grew: rescale what the earlier key blocks added
          for (int64_t i = 0; i < nq; ++i) {
            if (alpha[i] == T(1)) continue;
            T* row = acc_p + i * c;
            for (int64_t x = 0; x < c; ++x) row[x] *= alpha[i];
          }
        }
        gemm(acc_t, ts, mub.narrow(0, k0, nk), /*accumulate=*/kb > 0);
      }
      for (int64_t i = 0; i < nq; ++i) {
        const T inv_l = T(1) / l[i];
        T* orow = o_p + (b * n + q0 + i) * c;
        const T* arow = acc_p + i * c;
        for (int64_t x = 0; x < c; ++x) orow[x] = arow[x] * inv_l;
        lse_p[b * n + q0 + i] = m[i] + std::log(l[i]);
      }
    }
  });
}

template <typename T>
void joint_backward_impl(const at::Tensor& go, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& mu, const at::Tensor& lse, const at::Tensor& dvec,
                         at::Tensor& dq, at::Tensor& dk, at::Tensor& dmu) {
  const int64_t batch = q.size(0), n = q.size(1);
  const Blocks blk = joint_blocks(n, sizeof(T));
  const int64_t groups = std::min(kGroups, blk.nqb);
  const TileGemm gemm(q.scalar_type());
  const T* lse_p = lse.data_ptr<T>();
  const T* d_p = dvec.data_ptr<T>();
  const auto opts = q.options();
  // Workspace of groups 1 .. groups-1: [B, groups-1, N, K + C].
  const at::Tensor ws_k = at::zeros({batch, groups - 1, n, k.size(2)}, opts),
                   ws_mu = at::zeros({batch, groups - 1, n, mu.size(2)}, opts);

  at::parallel_for(0, batch * groups, 1, [&](int64_t begin, int64_t end) {
    at::Tensor ss = at::empty({blk.bq * blk.bk}, opts), sd = at::empty({blk.bq * blk.bk}, opts);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, g = task % groups;
      const at::Tensor qbt = q[b], kbt = k[b], mub = mu[b], gob = go[b];
      at::Tensor kk = g == 0 ? dk[b] : ws_k[b][g - 1], km = g == 0 ? dmu[b] : ws_mu[b][g - 1];
      for (int64_t qb = g * blk.nqb / groups; qb < (g + 1) * blk.nqb / groups; ++qb) {
        const int64_t q0 = blk.q0(qb), nq = blk.nq(qb);
        const at::Tensor qq = qbt.narrow(0, q0, nq), goq = gob.narrow(0, q0, nq);
        at::Tensor dqq = dq[b].narrow(0, q0, nq);
        for (int64_t kb = 0; kb < blk.nkb; ++kb) {
          const int64_t k0 = blk.k0(kb), nk = blk.nk(kb);
          at::Tensor ts = tile_view(ss, nq, nk), td = tile_view(sd, nq, nk);
          scores(gemm, ts, qbt, kbt, q0, nq, k0, nk);  // s = q k^T
          scores(gemm, td, gob, mub, q0, nq, k0, nk);  // dp = do mu^T
          joint_bwd_tile(ts.data_ptr<T>(), td.data_ptr<T>(), nq, nk, lse_p + b * n + q0,
                         d_p + b * n + q0);  // ts <- W, td <- dz
          at::Tensor kmk = km.narrow(0, k0, nk), kkk = kk.narrow(0, k0, nk);
          gemm(kmk, ts.t(), goq, /*accumulate=*/true);                // dmu += W^T do
          gemm(dqq, td, kbt.narrow(0, k0, nk), /*accumulate=*/true);  // dq += dz k
          gemm(kkk, td.t(), qq, /*accumulate=*/true);                 // dk += dz^T q
        }
      }
    }
  });
  for (int64_t g = 1; g < groups; ++g) {  // fixed order, element-wise adds
    dk.add_(ws_k.select(1, g - 1));
    dmu.add_(ws_mu.select(1, g - 1));
  }
}

std::tuple<at::Tensor, at::Tensor> joint_fwd_cpu(const at::Tensor& theta, const at::Tensor& phi,
                                                 const at::Tensor& eta, const at::Tensor& rho,
                                                 const at::Tensor& mu) {
  check_spatial_inputs(theta, phi, eta, rho, mu);
  const auto acc = acc_type(theta.scalar_type());
  const at::Tensor q = concat_acc(theta, eta, acc), k = concat_acc(phi, rho, acc),
                   m = to_acc(mu, acc);
  at::Tensor o = at::empty({q.size(0), q.size(1), m.size(2)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "ggnet_fast::joint_fwd",
                             [&] { joint_forward_impl<scalar_t>(q, k, m, o, lse); });
  return {o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> joint_bwd_cpu(
    const at::Tensor& grad_o, const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
    const at::Tensor& rho, const at::Tensor& mu, const at::Tensor& o, const at::Tensor& lse) {
  check_joint_bwd_args(grad_o, theta, phi, eta, rho, mu, o, lse);
  const auto acc = acc_type(theta.scalar_type());
  const at::Tensor q = concat_acc(theta, eta, acc), k = concat_acc(phi, rho, acc),
                   m = to_acc(mu, acc), go = to_acc(grad_o, acc), ls = to_acc(lse, acc);
  const at::Tensor dvec = (go * o.to(acc)).sum(-1).contiguous();  // D_i = do_i . o_i
  at::Tensor dq = at::zeros_like(q), dk = at::zeros_like(k), dmu = at::zeros_like(m);
  AT_DISPATCH_FLOATING_TYPES(acc, "ggnet_fast::joint_bwd", [&] {
    joint_backward_impl<scalar_t>(go, q, k, m, ls, dvec, dq, dk, dmu);
  });
  const int64_t d = theta.size(2), dg = eta.size(2);
  const auto part = [](const at::Tensor& x, int64_t start, int64_t len, const at::Tensor& like) {
    return x.narrow(2, start, len).to(like.scalar_type()).contiguous();
  };
  return {part(dq, 0, d, theta), part(dk, 0, d, phi), part(dq, d, dg, eta), part(dk, d, dg, rho),
          dmu.to(mu.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(ggnet_fast, CPU, m) {
  m.impl("joint_fwd", &joint_fwd_cpu);
  m.impl("joint_bwd", &joint_bwd_cpu);
}

}  // namespace ggnet::cpu
