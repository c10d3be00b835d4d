// Tiny C++ user of the standalone library built by CMakeLists.txt: calls the
// ggnet_fast::spatial and ggnet_fast::channel operators through the dispatcher, checks the
// spatial forward and gradients against a plain ATen formula, and prints "OK".
//
//   cmake -S . -B build -DCMAKE_PREFIX_PATH="$(python -c 'import
//   torch;print(torch.utils.cmake_prefix_path)')" cmake --build build -j2 &&
//   ./build/ggnet_spatial_example
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <iostream>

namespace {

at::Tensor spatial_op(const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
                      const at::Tensor& rho, const at::Tensor& mu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ggnet_fast::spatial", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&)>();
  return op.call(theta, phi, eta, rho, mu);
}

// The definition of kernels.md, materialising N x N (fine at this size).
at::Tensor spatial_plain(const at::Tensor& theta, const at::Tensor& phi, const at::Tensor& eta,
                         const at::Tensor& rho, const at::Tensor& mu) {
  auto p = at::softmax(at::bmm(theta, phi.transpose(1, 2)), -1) *
           at::softmax(at::bmm(eta, rho.transpose(1, 2)), -1);
  return at::bmm(at::softmax(p, -1), mu);
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

}  // namespace

int main() {
  at::manual_seed(0);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const int64_t b = 2, n = 37, d = 5, dg = 3, c = 7;
  std::vector<at::Tensor> x = {2 * at::randn({b, n, d}, opts), 2 * at::randn({b, n, d}, opts),
                               2 * at::randn({b, n, dg}, opts), 2 * at::randn({b, n, dg}, opts),
                               at::randn({b, n, c}, opts)};
  for (auto& t : x) t = t.detach().requires_grad_(true);
  const at::Tensor o = spatial_op(x[0], x[1], x[2], x[3], x[4]);
  const at::Tensor r = spatial_plain(x[0], x[1], x[2], x[3], x[4]);
  const at::Tensor mean_mu = x[4].mean(1, true);
  const double fwd = max_rel(o - mean_mu, r - mean_mu);
  const at::Tensor dout = at::randn_like(o);
  const auto g = torch::autograd::grad({o}, x, {dout});
  const auto gr = torch::autograd::grad({r}, x, {dout});
  double worst = fwd;
  for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, max_rel(g[i], gr[i]));

  static auto channel =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ggnet_fast::channel", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view,
                            std::optional<c10::string_view>, std::optional<double>)>();
  const at::Tensor y = at::randn({b, c, n}, at::kFloat);
  const at::Tensor z = channel.call(y, y, "product", std::nullopt, std::nullopt);

  std::cout << "spatial max relative error vs ATen (forward delta and gradients): " << worst
            << "\nchannel output " << z.sizes() << "\n";
  if (!(worst < 1e-9) || z.sizes() != y.sizes()) {
    std::cout << "FAILED\n";
    return 1;
  }
  std::cout << "OK\n";
  return 0;
}
