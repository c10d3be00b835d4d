// See tile_gemm.h.
#include "cpu/tile_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#define GGNET_HAVE_DLSYM 1
#endif

namespace ggnet::cpu {
namespace {

// at::native::mkldnn_matmul (aten/src/ATen/native/mkldnn/Matmul.cpp): the header is not
// installed with torch, the symbol is exported by libtorch_cpu.
using MkldnnMatmul = TileGemm::MkldnnMatmul;

MkldnnMatmul lookup_mkldnn_matmul() {
#if defined(GGNET_HAVE_DLSYM)
  if (!at::hasMKLDNN()) return nullptr;
  const char* name = "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff";
  void* sym = nullptr;
  // Look in the library that defines at::Context::hasMKLDNN (libtorch_cpu, which exports
  // it), whatever the scope it was loaded into; then in the global scope.
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&at::Context::hasMKLDNN), &info) != 0 &&
      info.dli_fname != nullptr) {
    if (void* lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD)) {
      sym = dlsym(lib, name);
      dlclose(lib);  // RTLD_NOLOAD took a reference on the already loaded library
    }
  }
  if (sym == nullptr) sym = dlsym(RTLD_DEFAULT, name);
  return reinterpret_cast<MkldnnMatmul>(sym);
#else
  return nullptr;
#endif
}

// One small product through oneDNN, checked against BLAS: catches a libtorch whose
// function refuses float32 or behaves differently from the signature assumed above.
bool probe(MkldnnMatmul fn) {
  if (fn == nullptr) return false;
  try {
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    const at::Tensor a = at::arange(1, 1 + 5 * 7, opts).view({5, 7}).div_(16);
    const at::Tensor b = at::arange(1, 1 + 9 * 7, opts).view({9, 7}).div_(32).t();
    at::Tensor ref = at::mm(a, b);
    at::Tensor out = at::ones({5, 9}, opts);
    fn(a, b, out, 1.0f, 1.0f);  // out = 1 + a @ b
    return at::allclose(out, ref + 1, 1e-5, 1e-5);
  } catch (const std::exception&) {
    return false;
  }
}

MkldnnMatmul onednn_matmul() {
  static MkldnnMatmul fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    MkldnnMatmul f = lookup_mkldnn_matmul();
    fn = probe(f) ? f : nullptr;
  });
  return fn;
}

std::string gemm_env() {
  const char* env = std::getenv("GGNET_CPU_GEMM");
  return env == nullptr ? std::string("auto") : std::string(env);
}

}  // namespace

TileGemm::TileGemm(at::ScalarType dtype) {
  const std::string choice = gemm_env();
  TORCH_CHECK_VALUE(choice.empty() || choice == "auto" || choice == "onednn" || choice == "blas",
                    "GGNET_CPU_GEMM must be 'auto', 'onednn' or 'blas', got '", choice, "'");
  if (choice == "blas" || dtype != at::kFloat) return;
  if (choice != "onednn") {
#if !(defined(__x86_64__) || defined(_M_X64))
    // Measured only on x86-64; elsewhere (e.g. aarch64, where oneDNN runs on ACL) BLAS
    // stays the default and GGNET_CPU_GEMM=onednn opts in.
    return;
#endif
    // torch.backends.mkldnn.enabled = False: the user asked torch not to use oneDNN.
    if (!at::globalContext().userEnabledMkldnn()) return;
  }
  onednn_ = onednn_matmul();
  TORCH_CHECK(onednn_ != nullptr || choice != "onednn",
              "GGNET_CPU_GEMM=onednn, but this torch has no usable float32 oneDNN matmul: "
              "torch allows it only on CPUs with AVX-512 BW/VL/DQ or AVX-NE-CONVERT, and "
              "needs a build with MKLDNN exporting at::native::mkldnn_matmul");
}

void TileGemm::operator()(at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                          bool accumulate) const {
  if (onednn_ != nullptr) {
    onednn_(a, b, out, accumulate ? 1.0f : 0.0f, 1.0f);
  } else if (accumulate) {
    at::cpu::addmm_out(out, out, a, b);
  } else {
    at::cpu::mm_out(out, a, b);
  }
}

}  // namespace ggnet::cpu
