// Device-independent half of the ggnet_fast operators: schemas, argument checks, Meta
// (fake-tensor) kernels, autograd, and the channel operator written with ATen calls.
// Device kernels of spatial_fwd / spatial_bwd live in csrc/cpu/ (and csrc/cuda/).
// See ggnet_ops.h for the operator list and the layout of the saved statistics.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <string>

#include "ggnet_ops.h"

namespace ggnet {

void check_spatial_inputs(const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
                          const at::Tensor& rho, const at::Tensor& mu) {
  const std::pair<const char*, const at::Tensor*> named[] = {
      {"theta", &theta}, {"phi", &phi}, {"eta", &eta}, {"rho", &rho}, {"mu", &mu}};
  for (const auto& [name, t] : named) {
    TORCH_CHECK_VALUE(t->dim() == 3, "ggnet_fast::spatial: ", name, " must be 3-D [B, N, *], got ",
                      t->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == theta.scalar_type(), "ggnet_fast::spatial: ", name,
                     " has dtype ", t->scalar_type(), " but theta has ", theta.scalar_type());
    TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), "ggnet_fast::spatial: ", name,
                     " must be floating point, got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == theta.device(), "ggnet_fast::spatial: ", name, " is on ",
                      t->device(), " but theta is on ", theta.device());
    TORCH_CHECK_VALUE(t->sym_size(0) == theta.sym_size(0) && t->sym_size(1) == theta.sym_size(1),
                      "ggnet_fast::spatial: ", name,
                      " must have theta's [B, N] = ", theta.sym_sizes().slice(0, 2), ", got ",
                      t->sym_sizes());
  }
  TORCH_CHECK_VALUE(phi.sym_size(2) == theta.sym_size(2),
                    "ggnet_fast::spatial: phi must have theta's d");
  TORCH_CHECK_VALUE(rho.sym_size(2) == eta.sym_size(2),
                    "ggnet_fast::spatial: rho must have eta's dg");
  TORCH_CHECK_VALUE(theta.sym_numel() > 0 && eta.sym_numel() > 0 && mu.sym_numel() > 0,
                    "ggnet_fast::spatial: inputs must not be empty");
}

void check_joint_bwd_args(const at::Tensor& grad_o, const at::Tensor& theta, const at::Tensor& phi,
                          const at::Tensor& eta, const at::Tensor& rho, const at::Tensor& mu,
                          const at::Tensor& o, const at::Tensor& lse) {
  check_spatial_inputs(theta, phi, eta, rho, mu);
  TORCH_CHECK_VALUE(grad_o.sizes() == mu.sizes(), "joint_bwd: grad_o must have mu's shape");
  TORCH_CHECK_VALUE(o.sizes() == mu.sizes(), "joint_bwd: o must have mu's shape");
  TORCH_CHECK_VALUE(lse.dim() == 2 && lse.size(0) == theta.size(0) && lse.size(1) == theta.size(1),
                    "joint_bwd: lse must be [B, N] as returned by joint_fwd");
}

ChannelMode check_channel_args(const at::Tensor& y, const at::Tensor& g, c10::string_view combine,
                               std::optional<c10::string_view> stabilize,
                               std::optional<double> scale) {
  TORCH_CHECK_VALUE(y.dim() == 3, "ggnet_fast::channel: y must be [B, C, N], got ", y.sym_sizes());
  TORCH_CHECK_VALUE(g.sym_sizes() == y.sym_sizes(), "ggnet_fast::channel: g must have y's shape ",
                    y.sym_sizes(), ", got ", g.sym_sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(y.scalar_type()),
                   "ggnet_fast::channel: y must be floating point, got ", y.scalar_type());
  TORCH_CHECK_TYPE(g.scalar_type() == y.scalar_type(), "ggnet_fast::channel: g has dtype ",
                   g.scalar_type(), " but y has ", y.scalar_type());
  TORCH_CHECK_VALUE(g.device() == y.device(), "ggnet_fast::channel: g is on ", g.device(),
                    " but y is on ", y.device());
  TORCH_CHECK_VALUE(y.sym_numel() > 0, "ggnet_fast::channel: inputs must not be empty");
  TORCH_CHECK_VALUE(combine == "product" || combine == "matmul",
                    "ggnet_fast::channel: combine must be 'product' or 'matmul', got '",
                    std::string(combine), "'");
  TORCH_CHECK_VALUE(!stabilize.has_value() || *stabilize == "max-minus",
                    "ggnet_fast::channel: stabilize must be None or 'max-minus', got '",
                    std::string(*stabilize), "'");
  TORCH_CHECK_VALUE(!scale.has_value() || *scale > 0, "ggnet_fast::channel: scale must be > 0");
  return {combine == "matmul", stabilize.has_value(), scale};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---------------------------------------------------------------- spatial: Meta kernels
std::tuple<at::Tensor, at::Tensor> spatial_fwd_meta(const at::Tensor& theta, const at::Tensor& phi,
                                                    const at::Tensor& eta, const at::Tensor& rho,
                                                    const at::Tensor& mu) {
  check_spatial_inputs(theta, phi, eta, rho, mu);
  const auto opts = mu.options().dtype(acc_type(theta.scalar_type()));
  return {at::empty_symint({theta.sym_size(0), theta.sym_size(1), mu.sym_size(2)}, opts),
          at::empty_symint({theta.sym_size(0), 3, theta.sym_size(1)}, opts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> spatial_bwd_meta(
    const at::Tensor& grad_o, const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
    const at::Tensor& rho, const at::Tensor& mu, const at::Tensor& o, const at::Tensor& stats) {
  check_spatial_inputs(theta, phi, eta, rho, mu);
  auto like = [](const at::Tensor& t) {
    return at::empty_symint(t.sym_sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
  };
  return {like(theta), like(phi), like(eta), like(rho), like(mu)};
}

std::tuple<at::Tensor, at::Tensor> joint_fwd_meta(const at::Tensor& theta, const at::Tensor& phi,
                                                  const at::Tensor& eta, const at::Tensor& rho,
                                                  const at::Tensor& mu) {
  check_spatial_inputs(theta, phi, eta, rho, mu);
  const auto opts = mu.options().dtype(acc_type(theta.scalar_type()));
  return {at::empty_symint({theta.sym_size(0), theta.sym_size(1), mu.sym_size(2)}, opts),
          at::empty_symint({theta.sym_size(0), theta.sym_size(1)}, opts)};
}

// The forward/backward operator pair of a streaming spatial mode: spatial_fwd/spatial_bwd
// (combine="product") or joint_fwd/joint_bwd (combine="joint").  Both forwards return
// (o, per-row statistics) and both backwards take (grad_o, inputs, o, statistics).
struct ProductOps {
  static constexpr const char* fwd = "ggnet_fast::spatial_fwd";
  static constexpr const char* bwd = "ggnet_fast::spatial_bwd";
};
struct JointOps {
  static constexpr const char* fwd = "ggnet_fast::joint_fwd";
  static constexpr const char* bwd = "ggnet_fast::joint_bwd";
};

template <typename Ops>
std::tuple<at::Tensor, at::Tensor> call_fwd(const at::Tensor& theta, const at::Tensor& phi,
                                            const at::Tensor& eta, const at::Tensor& rho,
                                            const at::Tensor& mu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow(Ops::fwd, "")
                       .template typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&)>();
  return op.call(theta, phi, eta, rho, mu);
}

// spatial / joint without autograd (inference mode, Meta, any device with forward kernels).
template <typename Ops>
at::Tensor no_grad(const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
                   const at::Tensor& rho, const at::Tensor& mu) {
  return std::get<0>(call_fwd<Ops>(theta, phi, eta, rho, mu));
}

template <typename Ops>
class StreamingFunction : public torch::autograd::Function<StreamingFunction<Ops>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& theta, const at::Tensor& phi,
                            const at::Tensor& eta, const at::Tensor& rho, const at::Tensor& mu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [o, stats] = call_fwd<Ops>(theta, phi, eta, rho, mu);
    ctx->save_for_backward({theta, phi, eta, rho, mu, o, stats});
    return o;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow(Ops::bwd, "")
            .template typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
    const auto s = ctx->get_saved_variables();
    auto [dth, dph, det, drh, dmu] = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    return {dth, dph, det, drh, dmu};
  }
};

template <typename Ops>
at::Tensor with_autograd(const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
                         const at::Tensor& rho, const at::Tensor& mu) {
  return StreamingFunction<Ops>::apply(theta, phi, eta, rho, mu);
}

// ---------------------------------------------------------------- channel (ATen calls)
// Row softmaxes of the two Gram matrices and their combination M (before stabilisation).
std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_maps(const at::Tensor& y,
                                                            const at::Tensor& g,
                                                            const ChannelMode& mode) {
  const double s = mode.scale.value_or(1.0);
  const at::Tensor a = at::bmm(y, y.transpose(1, 2)).mul_(s);
  const at::Tensor b = at::bmm(g, g.transpose(1, 2)).mul_(s);
  at::Tensor sz = at::softmax(a, -1), sg = at::softmax(b, -1);
  at::Tensor m = mode.matmul ? at::bmm(sz, sg) : sz * sg;
  return {sz, sg, m};
}

at::Tensor stabilized(const at::Tensor& m, const ChannelMode& mode) {
  return mode.max_minus ? std::get<0>(m.max(-1, true)) - m : m;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> channel_fwd_composite(
    const at::Tensor& y, const at::Tensor& g, c10::string_view combine,
    std::optional<c10::string_view> stabilize, std::optional<double> scale) {
  const ChannelMode mode = check_channel_args(y, g, combine, stabilize, scale);
  const NoAutocast no_autocast;
  const auto acc = acc_type(y.scalar_type());
  const at::Tensor yc = y.to(acc), gc = g.to(acc);
  auto [sz, sg, m] = channel_maps(yc, gc, mode);
  // Q = softmax(logits) with logits in [0, 1] is within a factor e of uniform; the expm1
  // form (docs/kernels.md) keeps the small modulation of Q @ Y at full relative precision:
  // Q @ Y = (sum_k Y_k + expm1(logits) @ Y) / (C + sum expm1(logits)).
  const at::Tensor e = at::expm1(stabilized(m, mode));
  const at::Tensor denom = e.sum(-1, true).add(c10::Scalar(y.sym_size(1)));
  const at::Tensor out = (yc.sum(1, true) + at::bmm(e, yc)) / denom;
  return {out, sz, sg, m};
}

// softmax backward along the last dim: s * (ds - sum(s * ds))
at::Tensor softmax_bwd(const at::Tensor& s, const at::Tensor& ds) {
  return s * (ds - (s * ds).sum(-1, true));
}

std::tuple<at::Tensor, at::Tensor> channel_bwd_composite(
    const at::Tensor& grad_out, const at::Tensor& y, const at::Tensor& g, const at::Tensor& sz,
    const at::Tensor& sg, const at::Tensor& m, c10::string_view combine,
    std::optional<c10::string_view> stabilize, std::optional<double> scale) {
  const ChannelMode mode = check_channel_args(y, g, combine, stabilize, scale);
  const NoAutocast no_autocast;
  const auto acc = acc_type(y.scalar_type());
  const at::Tensor yc = y.to(acc), gc = g.to(acc), go = grad_out.to(acc);
  const at::Tensor q = at::softmax(stabilized(m, mode), -1);
  at::Tensor dy = at::bmm(q.transpose(1, 2), go);                    // through Q @ Y
  at::Tensor dmm = softmax_bwd(q, at::bmm(go, yc.transpose(1, 2)));  // d(logits of Q)
  at::Tensor dm;
  if (mode.max_minus) {
    // logits = rowmax(M) - M; rowmax's gradient is shared by the maxima (as amax does).
    const at::Tensor is_max = (m == std::get<0>(m.max(-1, true))).to(acc);
    dm = is_max * (dmm.sum(-1, true) / is_max.sum(-1, true)) - dmm;
  } else {
    dm = dmm;
  }
  at::Tensor dsz = mode.matmul ? at::bmm(dm, sg.transpose(1, 2)) : dm * sg;
  at::Tensor dsg = mode.matmul ? at::bmm(sz.transpose(1, 2), dm) : dm * sz;
  const double s = mode.scale.value_or(1.0);
  at::Tensor da = softmax_bwd(sz, dsz).mul_(s), db = softmax_bwd(sg, dsg).mul_(s);
  dy = dy + at::bmm(da + da.transpose(1, 2), yc);
  at::Tensor dg = at::bmm(db + db.transpose(1, 2), gc);
  return {dy.to(y.scalar_type()), dg.to(g.scalar_type())};
}

at::Tensor channel_no_grad(const at::Tensor& y, const at::Tensor& g, c10::string_view combine,
                           std::optional<c10::string_view> stabilize, std::optional<double> scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ggnet_fast::channel_fwd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, c10::string_view,
                           std::optional<c10::string_view>, std::optional<double>)>();
  return std::get<0>(op.call(y, g, combine, stabilize, scale));
}

class ChannelFunction : public torch::autograd::Function<ChannelFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& g,
                            c10::string_view combine, std::optional<c10::string_view> stabilize,
                            std::optional<double> scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ggnet_fast::channel_fwd", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, c10::string_view,
                             std::optional<c10::string_view>, std::optional<double>)>();
    auto [out, sz, sg, m] = op.call(y, g, combine, stabilize, scale);
    ctx->save_for_backward({y, g, sz, sg, m});
    ctx->saved_data["combine"] = std::string(combine);
    ctx->saved_data["stabilize"] =
        stabilize.has_value() ? c10::IValue(std::string(*stabilize)) : c10::IValue();
    ctx->saved_data["scale"] = scale.has_value() ? c10::IValue(*scale) : c10::IValue();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("ggnet_fast::channel_bwd", "")
            .typed<std::tuple<at::Tensor, at::Tensor>(
                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                const at::Tensor&, const at::Tensor&, c10::string_view,
                std::optional<c10::string_view>, std::optional<double>)>();
    const auto s = ctx->get_saved_variables();
    const std::string combine = ctx->saved_data["combine"].toStringRef();
    const c10::IValue& stab_iv = ctx->saved_data["stabilize"];
    const std::string stab = stab_iv.isNone() ? std::string() : stab_iv.toStringRef();
    std::optional<c10::string_view> stabilize;
    if (!stab_iv.isNone()) stabilize = c10::string_view(stab);
    const c10::IValue& scale_iv = ctx->saved_data["scale"];
    std::optional<double> scale;
    if (!scale_iv.isNone()) scale = scale_iv.toDouble();
    auto [dy, dg] = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], combine, stabilize, scale);
    return {dy, dg, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor channel_autograd(const at::Tensor& y, const at::Tensor& g, c10::string_view combine,
                            std::optional<c10::string_view> stabilize,
                            std::optional<double> scale) {
  return ChannelFunction::apply(y, g, combine, stabilize, scale);
}

}  // namespace
}  // namespace ggnet

TORCH_LIBRARY(ggnet_fast, m) {
  m.def("spatial(Tensor theta, Tensor phi, Tensor eta, Tensor rho, Tensor mu) -> Tensor");
  m.def(
      "spatial_fwd(Tensor theta, Tensor phi, Tensor eta, Tensor rho, Tensor mu) "
      "-> (Tensor, Tensor)");
  m.def(
      "spatial_bwd(Tensor grad_o, Tensor theta, Tensor phi, Tensor eta, Tensor rho, "
      "Tensor mu, Tensor o, Tensor stats) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("joint(Tensor theta, Tensor phi, Tensor eta, Tensor rho, Tensor mu) -> Tensor");
  m.def(
      "joint_fwd(Tensor theta, Tensor phi, Tensor eta, Tensor rho, Tensor mu) "
      "-> (Tensor, Tensor)");
  m.def(
      "joint_bwd(Tensor grad_o, Tensor theta, Tensor phi, Tensor eta, Tensor rho, "
      "Tensor mu, Tensor o, Tensor lse) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("channel(Tensor y, Tensor g, str combine, str? stabilize, float? scale) -> Tensor");
  m.def(
      "channel_fwd(Tensor y, Tensor g, str combine, str? stabilize, float? scale) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "channel_bwd(Tensor grad_out, Tensor y, Tensor g, Tensor sz, Tensor sg, Tensor m, "
      "str combine, str? stabilize, float? scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ggnet_fast, Meta, m) {
  m.impl("spatial_fwd", &ggnet::spatial_fwd_meta);
  m.impl("spatial_bwd", &ggnet::spatial_bwd_meta);
  m.impl("joint_fwd", &ggnet::joint_fwd_meta);
  m.impl("joint_bwd", &ggnet::spatial_bwd_meta);  // the same five gradients
}

TORCH_LIBRARY_IMPL(ggnet_fast, CompositeExplicitAutograd, m) {
  m.impl("spatial", &ggnet::no_grad<ggnet::ProductOps>);
  m.impl("joint", &ggnet::no_grad<ggnet::JointOps>);
  m.impl("channel", &ggnet::channel_no_grad);
  m.impl("channel_fwd", &ggnet::channel_fwd_composite);
  m.impl("channel_bwd", &ggnet::channel_bwd_composite);
}

TORCH_LIBRARY_IMPL(ggnet_fast, Autograd, m) {
  m.impl("spatial", &ggnet::with_autograd<ggnet::ProductOps>);
  m.impl("joint", &ggnet::with_autograd<ggnet::JointOps>);
  m.impl("channel", &ggnet::channel_autograd);
}
