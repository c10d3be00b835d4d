// Plain C++ interface of the CUDA kernels (no torch headers on either side).
//
// csrc/cuda/ops_cuda.cpp checks the tensors, makes them contiguous, allocates the
// float32 outputs/workspaces, fills one SpatialParams and calls these launchers on the
// current stream; the .cu files implement them on raw pointers.  Layouts (all row-major,
// contiguous, batch-major):
//
//   theta, phi [B, N, d]   eta, rho [B, N, dg]   mu [B, N, C]   (dtype `dtype`)
//   stats      [B, 3, N] float32: lse_a, lse_b, L = N + sum_j expm1(p_ij)
//   o, grad_o  [B, N, C] float32          musum [B, C] float32 (sum_j mu_j)
//   dvec, rvec [B, N]    float32: D_i = grad_o_i . o_i and R_i = sum_j p_ij dp_ij
//   dtheta.. dmu: float32 with the inputs' shapes.
//
// Every launcher returns the cudaError_t of its launches (cudaSuccess when all started).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ggnet::cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// The sizes of one spatial problem.  Build it with make_spatial_sizes(): the padded
// sizes are those of the tensor-core operands (n rounded up to 64 rows, the feature
// widths d, dg, c rounded up to 16).
struct SpatialSizes {
  int64_t batch, n, d, dg, c;
  int64_t npad, dpad, dgpad, cpad;
};

inline SpatialSizes make_spatial_sizes(int64_t batch, int64_t n, int64_t d, int64_t dg, int64_t c) {
  const auto up = [](int64_t x, int64_t m) { return (x + m - 1) / m * m; };
  return {batch, n, d, dg, c, up(n, 64), up(d, 16), up(dg, 16), up(c, 16)};
}

// Everything a spatial launch reads and writes, in one struct (like FlashAttention's
// Flash_fwd_params): ops_cuda.cpp fills it, the launchers take it by const reference and
// every spatial kernel by value.  A pass leaves the fields it does not use null.
struct SpatialParams {
  DType dtype = DType::kFloat32;
  SpatialSizes sz{};
  // Inputs in `dtype`: [B, N, x], or for the tensor-core backward zero-padded to
  // [B, npad, xpad] (every 16x16 fragment then loads in bounds).
  const void* theta = nullptr;
  const void* phi = nullptr;
  const void* eta = nullptr;
  const void* rho = nullptr;
  const void* mu = nullptr;
  // Statistics: written by the forward (pass 1: lse_a, lse_b; pass 2: L), read by the
  // backward.
  float* stats = nullptr;
  // Forward.
  const float* musum = nullptr;  // [B, C]
  float* o = nullptr;            // [B, N, C], zero on entry
  // Backward.  grad_o (float32) for the scalar path; the tensor-core path takes it as
  // do_hi = T(grad_o), do_lo = T(grad_o - do_hi), padded like the inputs.
  const float* grad_o = nullptr;
  const void* do_hi = nullptr;
  const void* do_lo = nullptr;
  const float* dvec = nullptr;  // [B, N]
  float* rvec = nullptr;        // [B, N], written (not read) by the backward
  // Gradients: zero on entry for the scalar path (it accumulates); written by the
  // tensor-core path.
  float* dtheta = nullptr;
  float* dphi = nullptr;
  float* deta = nullptr;
  float* drho = nullptr;
  float* dmu = nullptr;

  void set_inputs(const void* theta_, const void* phi_, const void* eta_, const void* rho_,
                  const void* mu_) {
    theta = theta_, phi = phi_, eta = eta_, rho = rho_, mu = mu_;
  }
  void set_grads(float* dtheta_, float* dphi_, float* deta_, float* drho_, float* dmu_) {
    dtheta = dtheta_, dphi = dphi_, deta = deta_, drho = drho_, dmu = dmu_;
  }
};

// Which code path a spatial pass takes: tensor cores (WMMA, bf16 inputs on sm_80+, sizes
// within the kernels' limits; forward: tiles within the device's shared memory) or the
// scalar float32-FMA tiles.  `device_major` is the compute capability major version of
// the current device (0 forces the scalar path).
bool spatial_fwd_tc_supported(DType dt, const SpatialSizes& sz, int device_major);
bool spatial_bwd_tc_supported(DType dt, const SpatialSizes& sz, int device_major);

// Forward, pass 1 (stats[:, 0:2]) and pass 2 (o, stats[:, 2]): theta.. mu, musum, o,
// stats.  The _tc variant only where spatial_fwd_tc_supported().
cudaError_t spatial_fwd_scalar(const SpatialParams& p, cudaStream_t stream);
cudaError_t spatial_fwd_tc(const SpatialParams& p, cudaStream_t stream);

// The forward on the path spatial_fwd_tc_supported() picks.
inline cudaError_t spatial_fwd(const SpatialParams& p, int device_major, cudaStream_t stream) {
  return spatial_fwd_tc_supported(p.dtype, p.sz, device_major) ? spatial_fwd_tc(p, stream)
                                                               : spatial_fwd_scalar(p, stream);
}

// Backward by recomputation: R (rvec), then dtheta/deta (query rows), then dphi/drho/dmu
// (key rows).  Scalar: theta.. mu, grad_o, stats, dvec; gradients accumulated into
// zeros.  Tensor cores (only where spatial_bwd_tc_supported()): padded theta.. mu,
// do_hi, do_lo, stats, dvec; gradients written.
cudaError_t spatial_bwd_scalar(const SpatialParams& p, cudaStream_t stream);
cudaError_t spatial_bwd_tc(const SpatialParams& p, cudaStream_t stream);

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
