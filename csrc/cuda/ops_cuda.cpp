// CUDA kernels of the ggnet_fast operators (schemas, autograd and Meta kernels: csrc/ops.cpp).
//
// This file checks the tensors, makes them contiguous, allocates the float32 outputs and
// workspaces, fills one SpatialParams and calls the plain launchers of csrc/cuda/*.cu
// (launchers.h) on the current stream.  Registered for the CUDA dispatch key:
//   spatial_fwd, spatial_bwd  fused streaming kernels, on the tensor cores for bf16 on
//                             sm_80+ (spatial_fwd_tc.cu, spatial_bwd_tc.cu), scalar float32
//                             tiles otherwise (spatial_fwd_scalar.cu, spatial_bwd_scalar.cu);
//   spatial_cuda_path         (defined here) "tensor-cores" or "scalar": the path taken
//   channel_fwd               cuBLAS Gram matrices + fused softmax/expm1 kernels (channel.cu)
//                             + cuBLAS Q @ Y; channel_bwd keeps the ATen composite of ops.cpp.
// The spatial kernels take float32/float16/bfloat16 (float64: backend="reference"; the
// checks say so); channel_fwd computes float64 with ATen calls.
// GGNET_CUDA_SCALAR=1 in the environment forces the scalar (non-tensor-core) path.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "cuda/launchers.h"
#include "ggnet_ops.h"

namespace ggnet::cuda_ops {
namespace {

using ggnet::cuda::DType;
using ggnet::cuda::SpatialParams;

DType kernel_dtype(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "ggnet_fast::", op,
                       ": the CUDA kernels take float32, float16 or "
                       "bfloat16 inputs, got ",
                       t, " (use backend='reference' for float64)");
  }
  return DType::kFloat32;  // unreachable
}

// Compute capability major of the current device, or 0 when the scalar path is forced.
int device_major() {
  const char* force = std::getenv("GGNET_CUDA_SCALAR");
  if (force != nullptr && std::strcmp(force, "1") == 0) return 0;
  int device = 0, major = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major;
}

void check_cuda(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK_VALUE(t.is_cuda(), "ggnet_fast::", op, ": ", name, " must be a CUDA tensor, got ",
                    t.device());
}

ggnet::cuda::SpatialSizes spatial_sizes(const at::Tensor& theta, const at::Tensor& eta,
                                        const at::Tensor& mu) {
  const int64_t batch = theta.size(0);
  TORCH_CHECK_VALUE(batch <= 65535, "ggnet_fast::spatial: the CUDA kernels take B <= 65535, got ",
                    batch);
  return ggnet::cuda::make_spatial_sizes(batch, theta.size(1), theta.size(2), eta.size(2),
                                         mu.size(2));
}

std::tuple<at::Tensor, at::Tensor> spatial_fwd_cuda(const at::Tensor& theta, const at::Tensor& phi,
                                                    const at::Tensor& eta, const at::Tensor& rho,
                                                    const at::Tensor& mu) {
  ggnet::check_spatial_inputs(theta, phi, eta, rho, mu);
  check_cuda(theta, "theta", "spatial_fwd");
  const DType dt = kernel_dtype(theta.scalar_type(), "spatial_fwd");
  const c10::cuda::CUDAGuard guard(theta.device());
  const at::Tensor th = theta.contiguous(), ph = phi.contiguous(), et = eta.contiguous(),
                   rh = rho.contiguous(), mv = mu.contiguous();
  const auto sz = spatial_sizes(th, et, mv);
  const auto f32 = th.options().dtype(at::kFloat);
  const at::Tensor musum = at::sum(mv, {1}, false, at::kFloat).contiguous();  // [B, C]
  at::Tensor o = at::zeros({sz.batch, sz.n, sz.c}, f32);
  at::Tensor stats = at::empty({sz.batch, 3, sz.n}, f32);
  SpatialParams p;
  p.dtype = dt;
  p.sz = sz;
  p.set_inputs(th.data_ptr(), ph.data_ptr(), et.data_ptr(), rh.data_ptr(), mv.data_ptr());
  p.musum = musum.data_ptr<float>();
  p.o = o.data_ptr<float>();
  p.stats = stats.data_ptr<float>();
  C10_CUDA_CHECK(ggnet::cuda::spatial_fwd(p, device_major(), c10::cuda::getCurrentCUDAStream()));
  return {o, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> spatial_bwd_cuda(
    const at::Tensor& grad_o, const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
    const at::Tensor& rho, const at::Tensor& mu, const at::Tensor& o, const at::Tensor& stats) {
  ggnet::check_spatial_inputs(theta, phi, eta, rho, mu);
  check_cuda(theta, "theta", "spatial_bwd");
  const DType dt = kernel_dtype(theta.scalar_type(), "spatial_bwd");
  TORCH_CHECK_VALUE(grad_o.sizes() == mu.sizes(),
                    "ggnet_fast::spatial_bwd: grad_o must have mu's "
                    "shape ",
                    mu.sizes(), ", got ", grad_o.sizes());
  TORCH_CHECK_VALUE(o.sizes() == mu.sizes(), "ggnet_fast::spatial_bwd: o must have mu's shape ",
                    mu.sizes(), ", got ", o.sizes());
  TORCH_CHECK_VALUE(stats.dim() == 3 && stats.size(0) == theta.size(0) && stats.size(1) == 3 &&
                        stats.size(2) == theta.size(1),
                    "ggnet_fast::spatial_bwd: stats must be [B, 3, N] as returned by spatial_fwd, "
                    "got ",
                    stats.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_o", &grad_o},
                                {"o", &o},
                                {"stats", &stats}}) {
    TORCH_CHECK_VALUE(t->device() == theta.device(), "ggnet_fast::spatial_bwd: ", name, " is on ",
                      t->device(), " but theta is on ", theta.device());
  }
  const c10::cuda::CUDAGuard guard(theta.device());
  const at::Tensor th = theta.contiguous(), ph = phi.contiguous(), et = eta.contiguous(),
                   rh = rho.contiguous(), mv = mu.contiguous();
  const at::Tensor go = grad_o.to(at::kFloat).contiguous();
  const at::Tensor st = stats.to(at::kFloat).contiguous();
  const auto sz = spatial_sizes(th, et, mv);
  const at::Tensor dvec = (go * o.to(at::kFloat)).sum(-1).contiguous();  // D_i = do_i . o_i
  at::Tensor rvec = at::empty_like(dvec);
  const auto f32 = th.options().dtype(at::kFloat);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto t = theta.scalar_type();
  SpatialParams p;
  p.dtype = dt;
  p.sz = sz;
  p.stats = st.data_ptr<float>();
  p.dvec = dvec.data_ptr<float>();
  p.rvec = rvec.data_ptr<float>();
  // The gradients: written by the tensor-core path, accumulated into zeros by the scalar one.
  const auto grads = [&](bool zero) {
    const auto make = [&](const at::Tensor& x) {
      return zero ? at::zeros(x.sizes(), f32) : at::empty(x.sizes(), f32);
    };
    std::array<at::Tensor, 5> g{make(th), make(ph), make(et), make(rh), make(mv)};
    p.set_grads(g[0].data_ptr<float>(), g[1].data_ptr<float>(), g[2].data_ptr<float>(),
                g[3].data_ptr<float>(), g[4].data_ptr<float>());
    return g;
  };
  if (ggnet::cuda::spatial_bwd_tc_supported(dt, sz, device_major())) {
    // Tensor cores: operands zero-padded to [B, Npad, xpad] (fragments load straight from
    // global memory), grad_o split into hi + lo parts of the input dtype.
    const auto pad = [&](const at::Tensor& x, int64_t width) {
      at::Tensor out = at::zeros({sz.batch, sz.npad, width}, th.options());
      out.narrow(1, 0, sz.n).narrow(2, 0, x.size(2)).copy_(x);
      return out;
    };
    const at::Tensor do_hi = go.to(th.scalar_type());
    const at::Tensor do_lo = (go - do_hi.to(at::kFloat)).to(th.scalar_type());
    const at::Tensor thp = pad(th, sz.dpad), php = pad(ph, sz.dpad), etp = pad(et, sz.dgpad),
                     rhp = pad(rh, sz.dgpad), mup = pad(mv, sz.cpad), hip = pad(do_hi, sz.cpad),
                     lop = pad(do_lo, sz.cpad);
    p.set_inputs(thp.data_ptr(), php.data_ptr(), etp.data_ptr(), rhp.data_ptr(), mup.data_ptr());
    p.do_hi = hip.data_ptr();
    p.do_lo = lop.data_ptr();
    const auto g = grads(false);
    C10_CUDA_CHECK(ggnet::cuda::spatial_bwd_tc(p, stream));
    return {g[0].to(t), g[1].to(t), g[2].to(t), g[3].to(t), g[4].to(t)};
  }
  p.set_inputs(th.data_ptr(), ph.data_ptr(), et.data_ptr(), rh.data_ptr(), mv.data_ptr());
  p.grad_o = go.data_ptr<float>();
  const auto g = grads(true);
  C10_CUDA_CHECK(ggnet::cuda::spatial_bwd_scalar(p, stream));
  return {g[0].to(t), g[1].to(t), g[2].to(t), g[3].to(t), g[4].to(t)};
}

// Which path spatial_fwd (backward = false) or spatial_bwd (true) takes for these inputs:
// "tensor-cores" or "scalar" (a diagnostic for tests and users; conditions in
// spatial_fwd_tc.cu and spatial_bwd_tc.cu).
std::string spatial_cuda_path(const at::Tensor& theta, const at::Tensor& eta, const at::Tensor& mu,
                              bool backward) {
  check_cuda(theta, "theta", "spatial_cuda_path");
  const DType dt = kernel_dtype(theta.scalar_type(), "spatial_cuda_path");
  TORCH_CHECK_VALUE(theta.dim() == 3 && eta.dim() == 3 && mu.dim() == 3,
                    "ggnet_fast::spatial_cuda_path: theta, eta, mu must be [B, N, *]");
  const c10::cuda::CUDAGuard guard(theta.device());
  const auto sz = spatial_sizes(theta, eta, mu);
  const int major = device_major();
  const bool tc = backward ? ggnet::cuda::spatial_bwd_tc_supported(dt, sz, major)
                           : ggnet::cuda::spatial_fwd_tc_supported(dt, sz, major);
  return tc ? "tensor-cores" : "scalar";
}

// channel_fwd: same outputs as the ATen composite of ops.cpp (out, sz, sg, m), with the
// softmaxes fused and the outer softmax in the expm1 form.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> channel_fwd_cuda(
    const at::Tensor& y, const at::Tensor& g, c10::string_view combine,
    std::optional<c10::string_view> stabilize, std::optional<double> scale) {
  const ggnet::ChannelMode mode = ggnet::check_channel_args(y, g, combine, stabilize, scale);
  const ggnet::NoAutocast no_autocast;
  const c10::cuda::CUDAGuard guard(y.device());
  const int64_t batch = y.size(0), c = y.size(1);
  const auto acc = ggnet::acc_type(y.scalar_type());  // float64 stays float64 (ATen path)
  const at::Tensor yc = y.to(acc).contiguous(), gc = g.to(acc).contiguous();
  at::Tensor a = at::bmm(yc, yc.transpose(1, 2));
  at::Tensor b = at::bmm(gc, gc.transpose(1, 2));
  if (mode.scale.has_value()) {
    a.mul_(*mode.scale);
    b.mul_(*mode.scale);
  }
  a = a.contiguous();
  b = b.contiguous();
  const bool max_minus = mode.max_minus;
  at::Tensor sz, sg, m, e, lsum;
  if (acc == at::kDouble) {  // float64 (gradcheck): plain ATen, same formulas
    sz = at::softmax(a, -1);
    sg = at::softmax(b, -1);
    m = sz * sg;
  } else {
    sz = at::empty_like(a);
    sg = at::empty_like(a);
    m = at::empty_like(a);
    C10_CUDA_CHECK(ggnet::cuda::channel_softmaxes(
        a.data_ptr<float>(), b.data_ptr<float>(), sz.data_ptr<float>(), sg.data_ptr<float>(),
        m.data_ptr<float>(), batch, c, c10::cuda::getCurrentCUDAStream()));
  }
  if (mode.matmul) m = at::bmm(sz, sg).contiguous();
  if (acc == at::kDouble) {
    e = at::expm1(max_minus ? std::get<0>(m.max(-1, true)) - m : m);
    lsum = e.sum(-1, true).add_(static_cast<double>(c));
  } else {
    e = at::empty_like(m);
    lsum = at::empty({batch, c, 1}, m.options());
    C10_CUDA_CHECK(ggnet::cuda::channel_outer(m.data_ptr<float>(), e.data_ptr<float>(),
                                              lsum.data_ptr<float>(), max_minus, batch, c,
                                              c10::cuda::getCurrentCUDAStream()));
  }
  // Q @ Y = (sum_k y_k + e @ Y) / lsum
  at::Tensor out = at::baddbmm(yc.sum(1, true).expand({batch, c, yc.size(2)}), e, yc);
  out.div_(lsum);
  return {out, sz, sg, m};
}

}  // namespace
}  // namespace ggnet::cuda_ops

TORCH_LIBRARY_FRAGMENT(ggnet_fast, m) {
  m.def("spatial_cuda_path(Tensor theta, Tensor eta, Tensor mu, bool backward=False) -> str");
}

TORCH_LIBRARY_IMPL(ggnet_fast, CUDA, m) {
  m.impl("spatial_cuda_path", &ggnet::cuda_ops::spatial_cuda_path);
  m.impl("spatial_fwd", &ggnet::cuda_ops::spatial_fwd_cuda);
  m.impl("spatial_bwd", &ggnet::cuda_ops::spatial_bwd_cuda);
  m.impl("channel_fwd", &ggnet::cuda_ops::channel_fwd_cuda);
}
