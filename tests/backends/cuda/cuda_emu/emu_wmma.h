// Emulated nvcuda::wmma (replaces <mma.h> in the emulated copy of common.cuh).
// Every lane holds the whole 16x16 tile, which is exact for code that only moves
// fragments through load/store/mma/fill (no per-element fragment access), as ours does.
#pragma once
#include <type_traits>

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
inline float emu_f(float x) { return x; }
inline float emu_f(__half x) { return __half2float(x); }
inline float emu_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float v[16][16];
};
template <typename Use, int M, int N, int K, typename T, typename L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, float x) {
  for (auto& r : f.v)
    for (auto& y : r) y = x;
}
template <typename Use, typename T, typename L, typename P>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const P* p, unsigned ld) {
  static_assert(std::is_same_v<P, T>, "fragment element type and pointer type differ");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.v[r][c] = std::is_same_v<L, row_major> ? emu_f(p[r * ld + c]) : emu_f(p[c * ld + r]);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ld, layout_t layout) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      (layout == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.v[r][c];
}
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[16][16];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float s = c.v[r][n];
      for (int k = 0; k < 16; ++k) s += a.v[r][k] * b.v[k][n];
      out[r][n] = s;
    }
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) d.v[r][n] = out[r][n];
}
}  // namespace nvcuda::wmma

alignas(128) inline unsigned char emu_dyn_smem[256 * 1024];
inline cudaError_t emu_func_get_attributes(cudaFuncAttributes* a) {
  a->ptxVersion = 80;
  a->binaryVersion = 80;
  return cudaSuccess;
}
inline cudaError_t emu_get_device(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t emu_smem_optin(int* v) {
  *v = 163 * 1024;  // an A100's opt-in limit
  return cudaSuccess;
}
#define cudaFuncGetAttributes(a, ...) emu_func_get_attributes(a)
#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaGetDevice emu_get_device
#define cudaDeviceGetAttribute(v, ...) emu_smem_optin(v)
