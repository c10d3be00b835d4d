// Fused element-wise parts of the channel operator (docs/kernels.md, Eq. 4-5).
//
// The C x C maps are small (C <= a few hundred), so they are materialised: the Gram
// matrices, M = Sz @ Sg ("matmul" mode) and Q @ Y are batched GEMMs done by cuBLAS in
// ops_cuda.cpp.  These kernels fuse what lies between them, one block per row of a
// C x C map (grid = B * C rows, 256 threads, float32 throughout):
//   channel_softmax_kernel: sz = softmax(a), sg = softmax(b), m = sz * sg;
//   channel_outer_kernel:   logit = m (or rowmax(m) - m), e = expm1(logit) and
//                           lsum = C + sum_k e, so that Q @ Y = (sum_k y_k + e @ Y) / lsum
//                           keeps the modulation at full relative precision.
#include <cuda_runtime.h>

#include "cuda/launchers.h"

namespace ggnet::cuda {
namespace {

constexpr int kRowThreads = 256;

// Block-wide reduction (sum or max) of one float per thread; every thread gets the result.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kRowThreads / 32; ++w) v = kMax ? fmaxf(v, scratch[w]) : v + scratch[w];
  return v;
}

// Softmax of one row of length c, written to out; returns nothing.
__device__ __forceinline__ void row_softmax(const float* __restrict__ in, float* __restrict__ out,
                                            int64_t c, float* scratch) {
  float mx = -INFINITY;
  for (int64_t k = threadIdx.x; k < c; k += kRowThreads) mx = fmaxf(mx, in[k]);
  mx = block_reduce<true>(mx, scratch);
  float sum = 0.f;
  for (int64_t k = threadIdx.x; k < c; k += kRowThreads) sum += __expf(in[k] - mx);
  sum = block_reduce<false>(sum, scratch);
  const float inv = 1.f / sum;
  for (int64_t k = threadIdx.x; k < c; k += kRowThreads) out[k] = __expf(in[k] - mx) * inv;
}

__global__ void __launch_bounds__(kRowThreads)
    channel_softmax_kernel(const float* __restrict__ a, const float* __restrict__ b,
                           float* __restrict__ sz, float* __restrict__ sg, float* __restrict__ m,
                           int64_t c) {
  __shared__ float scratch[kRowThreads / 32];
  const int64_t off = int64_t(blockIdx.x) * c;
  row_softmax(a + off, sz + off, c, scratch);
  row_softmax(b + off, sg + off, c, scratch);
  // Each thread multiplies the elements it wrote itself: no barrier needed.
  for (int64_t k = threadIdx.x; k < c; k += kRowThreads) m[off + k] = sz[off + k] * sg[off + k];
}

__global__ void __launch_bounds__(kRowThreads)
    channel_outer_kernel(const float* __restrict__ m, float* __restrict__ e,
                         float* __restrict__ lsum, bool max_minus, int64_t c) {
  __shared__ float scratch[kRowThreads / 32];
  const int64_t off = int64_t(blockIdx.x) * c;
  float mx = 0.f;
  if (max_minus) {
    mx = -INFINITY;
    for (int64_t k = threadIdx.x; k < c; k += kRowThreads) mx = fmaxf(mx, m[off + k]);
    mx = block_reduce<true>(mx, scratch);
  }
  float sum = 0.f;
  for (int64_t k = threadIdx.x; k < c; k += kRowThreads) {
    const float logit = max_minus ? mx - m[off + k] : m[off + k];
    const float v = expm1f(logit);
    e[off + k] = v;
    sum += v;
  }
  sum = block_reduce<false>(sum, scratch);
  if (threadIdx.x == 0) lsum[blockIdx.x] = float(c) + sum;
}

}  // namespace

cudaError_t channel_softmaxes(const float* a, const float* b, float* sz, float* sg, float* m,
                              int64_t batch, int64_t c, cudaStream_t stream) {
  channel_softmax_kernel<<<static_cast<unsigned>(batch * c), kRowThreads, 0, stream>>>(a, b, sz, sg,
                                                                                       m, c);
  return cudaGetLastError();
}

cudaError_t channel_outer(const float* m, float* e, float* lsum, bool max_minus, int64_t batch,
                          int64_t c, cudaStream_t stream) {
  channel_outer_kernel<<<static_cast<unsigned>(batch * c), kRowThreads, 0, stream>>>(m, e, lsum,
                                                                                     max_minus, c);
  return cudaGetLastError();
}

}  // namespace ggnet::cuda
