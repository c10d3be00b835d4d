// Shared declarations of the ggnet_fast torch operators (namespace `ggnet_fast`).
//
// The schemas are defined once in csrc/ops.cpp (TORCH_LIBRARY); each device adds its
// kernels with TORCH_LIBRARY_IMPL(ggnet_fast, <Device>, m):
//   csrc/cpu/spatial_cpu.cpp   -> CPU  kernels of spatial_fwd / spatial_bwd
//   csrc/cuda/*.cpp (+ .cu)    -> CUDA kernels of the same ops (the .cu files hold plain
//                                 launchers on raw pointers and never include torch headers)
//
// Operators (all tensors batch-major, contiguous or not; kernels make them contiguous):
//
//   spatial(theta[B,N,d], phi[B,N,d], eta[B,N,dg], rho[B,N,dg], mu[B,N,C]) -> o[B,N,C]
//       Differentiable public op (autograd kernel in ops.cpp).  o is in the accumulation
//       dtype acc = float64 for float64 inputs, float32 otherwise; callers cast.
//   spatial_fwd(theta, phi, eta, rho, mu) -> (o[B,N,C] acc, stats[B,3,N] acc)
//       stats[:,0] = lse_a (row logsumexp of theta phi^T), stats[:,1] = lse_b (of eta rho^T),
//       stats[:,2] = L = sum_j exp(p_ij) = N + sum_j expm1(p_ij).
//   spatial_bwd(grad_o[B,N,C], theta, phi, eta, rho, mu, o, stats)
//       -> (dtheta, dphi, deta, drho, dmu), each in its input's dtype.
//   joint(theta, phi, eta, rho, mu) -> o[B,N,C] acc      (combine="joint", autograd in ops.cpp)
//       o = softmax_j(theta phi^T + eta rho^T) @ mu.
//   joint_fwd(theta, phi, eta, rho, mu) -> (o[B,N,C] acc, lse[B,N] acc)
//       lse_i = log sum_j exp(a_ij + b_ij).
//   joint_bwd(grad_o, theta, phi, eta, rho, mu, o, lse) -> (dtheta, dphi, deta, drho, dmu)
//       Only the CPU device has joint kernels (csrc/cpu/joint_cpu.cpp).
//   channel(y[B,C,N], g[B,C,N], str combine, str? stabilize, float? scale) -> out[B,C,N] acc
//   channel_fwd(...) -> (out acc, sz[B,C,C] acc, sg[B,C,C] acc, m[B,C,C] acc)
//   channel_bwd(grad_out, y, g, sz, sg, m, combine, stabilize, scale) -> (dy, dg)
//       The channel ops are written with ATen calls (CompositeExplicitAutograd), so every
//       device has them; a device may still register its own kernels.
//
// The operator contract (definitions, saved statistics, gradients, numerics and
// tolerances): docs/kernels.md.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/ScalarType.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/string_view.h>

#include <optional>

namespace ggnet {

// float64 stays float64; float32, float16 and bfloat16 accumulate in float32.
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Held by every kernel that calls ATen operators: the custom ops fall through autocast's
// dispatch keys, so without it an inner at::bmm would run in float16/bfloat16 under
// autocast; the contract (docs/kernels.md) is to compute from the inputs' dtype.
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

// Shape/dtype/device checks shared by every device's spatial kernels.
void check_spatial_inputs(const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
                          const at::Tensor& rho, const at::Tensor& mu);

// check_spatial_inputs plus the shapes of joint_bwd's grad_o, o ([B, N, C]) and lse ([B, N]).
void check_joint_bwd_args(const at::Tensor& grad_o, const at::Tensor& theta, const at::Tensor& phi,
                          const at::Tensor& eta, const at::Tensor& rho, const at::Tensor& mu,
                          const at::Tensor& o, const at::Tensor& lse);

// The channel operator's options after check_channel_args.
struct ChannelMode {
  bool matmul;     // combine == "matmul" (else "product")
  bool max_minus;  // stabilize == "max-minus" (else None)
  std::optional<double> scale;
};

// The checks every device's channel kernels start with: y and g [B, C, N] of one shape,
// one floating dtype and one device, not empty; combine in {"product", "matmul"},
// stabilize None or "max-minus", scale None or > 0.  Raises ValueError/TypeError naming
// the argument; returns the parsed options.
ChannelMode check_channel_args(const at::Tensor& y, const at::Tensor& g, c10::string_view combine,
                               std::optional<c10::string_view> stabilize,
                               std::optional<double> scale);

}  // namespace ggnet
