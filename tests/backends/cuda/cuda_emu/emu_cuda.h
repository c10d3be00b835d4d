// Host emulation of the CUDA features used by csrc/cuda/ (verification without a GPU).
//
// Force-included (g++ -include) before a copy of each .cu file in which every
// `kernel<<<grid, threads, smem, stream>>>(args)` was rewritten to
// `emu_launch(grid, threads, kernel, args)`.  A launch runs the blocks one after the
// other on `threads` host threads; __syncthreads and __syncwarp are block-wide barriers
// (stricter than the hardware, and a barrier reached by only part of the block would
// hang, so non-uniform barriers are caught), __shfl_xor_sync exchanges through a
// block-wide buffer (so it must be reached by the whole block, as in these kernels),
// __shared__ variables are statics shared by the block's threads.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <thread>
#include <vector>

#undef __shared__
#define __shared__ static
#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __forceinline__
#define __forceinline__ inline
#undef __device__
#define __device__
#undef __restrict__
#define __restrict__

struct EmuIdx {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuIdx emu_thread, emu_block;
#define threadIdx emu_thread
#define blockIdx emu_block

inline std::barrier<>* emu_bar = nullptr;
inline float emu_shfl_buf[1024];
inline void __syncthreads() { emu_bar->arrive_and_wait(); }
inline void __syncwarp() { emu_bar->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int off) {
  const unsigned t = threadIdx.x;
  emu_bar->arrive_and_wait();
  emu_shfl_buf[t] = v;
  emu_bar->arrive_and_wait();
  const float r = emu_shfl_buf[t ^ static_cast<unsigned>(off)];
  emu_bar->arrive_and_wait();
  return r;
}
inline float __expf(float x) { return std::exp(x); }
inline cudaError_t emu_get_last_error() { return cudaSuccess; }
#define cudaGetLastError emu_get_last_error

template <typename K, typename... A>
void emu_launch(dim3 grid, int threads, K kernel, A... args) {
  std::barrier<> bar(threads);
  emu_bar = &bar;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      emu_thread.x = static_cast<unsigned>(t);
      for (unsigned by = 0; by < grid.y; ++by) {
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          emu_block.x = bx;
          emu_block.y = by;
          kernel(args...);
          bar.arrive_and_wait();  // the next block starts when this one has finished
        }
      }
    });
  }
  for (auto& th : pool) th.join();
}
