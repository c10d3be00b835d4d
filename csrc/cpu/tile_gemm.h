// Tile products of the CPU kernels: out = a @ b or out += a @ b on 2-D (strided) views.
//
// float32 products go to oneDNN's matmul (the one ATen's own bf16/fp16 CPU matmuls use,
// at::native::mkldnn_matmul, looked up by name at run time so the extension still loads
// against a libtorch without it), everything else and every fallback to ATen's BLAS
// (at::cpu::mm_out / addmm_out: MKL or OpenBLAS).  Both compute in float32 with float32
// accumulation by default (torch.set_float32_matmul_precision("medium") lets oneDNN use
// bf16 arithmetic, as it does for torch's own matmuls).  oneDNN's JIT kernels pick the
// widest vector ISA of the CPU by feature.  Measured on a 2-core AMD EPYC (AVX-512), two
// threads each running single-threaded tiles, aggregate: 64 x 256 x 4096 378 GFLOP/s
// (oneDNN) vs 186 (MKL); 64 x 4096 x 256 409 vs 188.  When called inside
// at::parallel_for both libraries run single-threaded on the calling thread.
//
// GGNET_CPU_GEMM selects the library per operator call: "auto" (default: oneDNN on x86-64
// CPUs torch allows it on -- AVX-512 BW/VL/DQ or AVX-NE-CONVERT -- when a probe product on
// first use matches BLAS and torch.backends.mkldnn.enabled is true; else BLAS), "onednn"
// (error if unavailable), "blas".
#pragma once

#include <ATen/core/Tensor.h>

namespace ggnet::cpu {

class TileGemm {
 public:
  // The library for products of `dtype` tensors, from GGNET_CPU_GEMM and availability.
  // Call outside parallel regions (the first call probes oneDNN once).
  explicit TileGemm(at::ScalarType dtype);

  // out (+)= a @ b.  a: [m, k], b: [k, n], out: [m, n]; any strides with a unit stride
  // in one dimension; out must not alias a or b.
  void operator()(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) const;

  bool uses_onednn() const { return onednn_ != nullptr; }

  // at::native::mkldnn_matmul(mat1, mat2, result, beta, alpha):
  //   result = beta * result + alpha * mat1 @ mat2.
  using MkldnnMatmul = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, float,
                                float);

 private:
  MkldnnMatmul onednn_ = nullptr;  // nullptr: ATen BLAS
};

}  // namespace ggnet::cpu
