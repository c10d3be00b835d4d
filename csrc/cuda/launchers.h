// Plain C++ interface of the CUDA kernels (no torch headers on either side).
//
// csrc/cuda/ops_cuda.cpp checks the tensors, makes them contiguous, allocates the
// float32 outputs/workspaces and calls these launchers on the current stream; the .cu
// files implement them on raw pointers.  Layouts (all row-major, contiguous, batch-major):
//
//   theta, phi [B, N, d]   eta, rho [B, N, dg]   mu [B, N, C]   (dtype `dt`)
//   stats      [B, 3, N] float32: lse_a, lse_b, L = N + sum_j expm1(p_ij)
//   o, grad_o  [B, N, C] float32          musum [B, C] float32 (sum_j mu_j)
//   dvec, rvec [B, N]    float32: D_i = grad_o_i . o_i and R_i = sum_j p_ij dp_ij
//   dtheta.. dmu: float32 accumulators with the inputs' shapes, zero on entry.
//
// Every launcher returns the cudaError_t of its launches (cudaSuccess when all started).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ggnet::cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// The sizes of one spatial problem, the only way sizes travel from ops_cuda.cpp to the
// launchers and on, by value, to every kernel.  Build it with make_spatial_sizes(): the
// padded sizes are those of the tensor-core operands (n rounded up to 64 rows, the
// feature widths d, dg, c rounded up to 16).
struct SpatialSizes {
  int64_t batch, n, d, dg, c;
  int64_t npad, dpad, dgpad, cpad;
};

inline SpatialSizes make_spatial_sizes(int64_t batch, int64_t n, int64_t d, int64_t dg,
                                       int64_t c) {
  const auto up = [](int64_t x, int64_t m) { return (x + m - 1) / m * m; };
  return {batch, n, d, dg, c, up(n, 64), up(d, 16), up(dg, 16), up(c, 16)};
}

// Which code path the spatial forward takes: tensor cores (WMMA, bf16 inputs on
// sm_80+, d, dg, C <= 256, tiles within the device's shared memory) or the scalar
// float32-FMA tiles.  `device_major` is the compute capability major version of the
// current device (0 forces the scalar path).
bool spatial_uses_tensor_cores(DType dt, const SpatialSizes& sz, int device_major);

// Pass 1 (stats[:, 0:2]) and pass 2 (o, stats[:, 2]).  o must be zero on entry.
cudaError_t spatial_forward(DType dt, const void* theta, const void* phi, const void* eta,
                            const void* rho, const void* mu, const float* musum, float* o,
                            float* stats, const SpatialSizes& sz, int device_major,
                            cudaStream_t stream);

// Backward by recomputation: a query-block pass for rvec, a query-block pass for
// dtheta/deta, a key-block pass for dphi/drho/dmu.  rvec is written, not read.
cudaError_t spatial_backward(DType dt, const float* grad_o, const void* theta, const void* phi,
                             const void* eta, const void* rho, const void* mu,
                             const float* stats, const float* dvec, float* rvec, float* dtheta,
                             float* dphi, float* deta, float* drho, float* dmu,
                             const SpatialSizes& sz, cudaStream_t stream);

// Tensor-core backward (WMMA; bf16 on sm_80+, C <= 256, d + dg <= 256 after
// rounding each up to 16).  Operands zero-padded to [B, Npad, xpad] in the input dtype
// (Npad = N rounded up to 64, xpad = x rounded up to 16); grad_o split into
// do_hi = T(grad_o), do_lo = T(grad_o - do_hi), padded the same way.  Same outputs as
// spatial_backward (rvec written; dtheta.. dmu written, not accumulated).
bool spatial_bwd_uses_tensor_cores(DType dt, const SpatialSizes& sz, int device_major);
cudaError_t spatial_backward_tc(DType dt, const void* theta_p, const void* phi_p,
                                const void* eta_p, const void* rho_p, const void* mu_p,
                                const void* do_hi_p, const void* do_lo_p, const float* stats,
                                const float* dvec, float* rvec, float* dtheta, float* dphi,
                                float* deta, float* drho, float* dmu, const SpatialSizes& sz,
                                cudaStream_t stream);

// Channel operator, the fused element-wise part (the Gram matrices and Q @ Y are cuBLAS
// calls in ops_cuda.cpp).  a, b: [B, C, C] float32 Gram matrices (already scaled).
// Writes sz = softmax_row(a), sg = softmax_row(b), m = sz * sg (product mode only; for
// "matmul" the caller forms m with a batched GEMM), and, from m, the outer-softmax
// deviation e = expm1(logit) with logit = m or rowmax(m) - m, and lsum = C + sum_k e.
cudaError_t channel_softmaxes(const float* a, const float* b, float* sz, float* sg, float* m,
                              int64_t batch, int64_t c, cudaStream_t stream);
cudaError_t channel_outer(const float* m, float* e, float* lsum, bool max_minus, int64_t batch,
                          int64_t c, cudaStream_t stream);

}  // namespace ggnet::cuda
