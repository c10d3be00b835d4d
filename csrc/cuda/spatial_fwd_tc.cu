// Forward of the guided spatial operator on the tensor cores (WMMA, <mma.h>), bfloat16 on
// sm_80+; same two passes and outputs as spatial_fwd_scalar.cu.
//
// Only bfloat16 takes it: the operand e = expm1(p) can be as small as p ~ 1/N^2 (diffuse
// attention: 6e-8 at N = 4096), which float16 holds only as a subnormal or zero, while
// bfloat16 keeps float32's exponent range.  The kernel is written for any 16-bit T.
//
// Block = 8 warps = 256 threads, 64 query rows: 4 row blocks of 16 rows, each shared by
// a pair of warps (halves 0 and 1).  Key tiles of 64.  In a tile, each warp of a pair
// computes the scores and weights of its half of the keys (32) for the pair's rows, and
// then the value product of all 64 keys for its half of the C fragments (the first or
// the second half): no score is computed twice, and each warp holds half of the accumulators, so
// a block of 8 warps fits where 4 warps with all of them did (twice the warps per SM at
// d = dg = 256, where shared memory allows one block).  The pair combines its row
// statistics (lse, L) through shared memory once, at the end.
// Shared memory (dynamic, opt-in above 48 KiB), all operands in the input dtype T:
//   qa [64][dpad+8], qb [64][dgpad+8]  theta / eta rows of the block (loaded once)
//   ka [64][dpad+8], kb [64][dgpad+8]  phi / rho rows of the current key tile
//   mv [64][cpad+8]                    mu rows of the current key tile (pass 2)
//   e  [4][16][64+8]                   per-row-block e_ij = expm1(p_ij) in T (pass 2)
//   scr[8][2][16][16] float            per-warp fragment scratch
//   red[2][64][4] float                the pair's row statistics (end of each pass)
// (xpad = x rounded up to 16; padding rows/columns are zero.)
//
// Per key tile and 16-key column block: a = theta phi^T and b = eta rho^T as 16x16x16
// fp16/bf16 MMAs with float32 accumulators; the two accumulator fragments are stored to
// the warp's float scratch, where lane l handles row l/2, 8 columns (in a lane-rotated
// order that makes the scratch reads conflict-free):
//   pass 1 (kStats): online (max, sum) for lse_a and lse_b;
//   pass 2:          p = exp((a - lse_a) + (b - lse_b)), e = expm1(p) (float32),
//                    e rounded to T for the value product, and L += that rounded e
//                    (float32 sum) so that L and the weights agree.
// Pass 2 then accumulates acc[16 x cpad] += e[16 x 64] @ mu[64 x cpad] on the tensor
// cores (float32 fragments in registers, a warp's half of them; C <= 2 kMaxCFrag 16),
// and finally writes
// o = (sum_j mu_j + acc) / L.  Only e (|e| < e - 1, full relative precision) is rounded
// to T; the mean term sum_j mu_j and L stay float32 (docs/kernels.md, "expm1 form").
#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/launchers.h"

namespace ggnet::cuda {
namespace {

constexpr int kRowWarps = 4;  // row blocks of 16 query rows
constexpr int kHalves = 2;    // warps per row block (key / C halves)
constexpr int kWarps = kRowWarps * kHalves;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kRowWarps;             // query rows per block
constexpr int kKeys = 64;                         // keys per tile
constexpr int kKeyBlocks = kKeys / 16 / kHalves;  // 16-key column blocks per warp
constexpr int kPad = 8;                           // row padding (elements) of the T tiles
constexpr int kMaxD = 256;                        // d, dg limit of this path
constexpr int kMaxC = 256;                        // C limit of this path (16 accumulator fragments)

__host__ __device__ constexpr int64_t align128(int64_t bytes) { return (bytes + 127) / 128 * 128; }

// Byte offsets of the shared-memory sections.
struct Layout {
  int64_t dpad, dgpad, cpad;  // padded feature sizes (multiples of 16)
  int64_t ldq, ldg, ldc;      // leading dimensions (elements) of the T tiles
  int64_t qa, qb, ka, kb, mv, e, scr, red, total;

  __host__ __device__ Layout(const SpatialSizes& sz, int64_t elem, bool with_values) {
    dpad = sz.dpad;
    dgpad = sz.dgpad;
    cpad = with_values ? sz.cpad : 0;
    ldq = dpad + kPad;
    ldg = dgpad + kPad;
    ldc = cpad + kPad;
    int64_t off = 0;
    // clang-format off: one region of the layout per line
    qa = off; off += align128(kRows * ldq * elem);
    qb = off; off += align128(kRows * ldg * elem);
    ka = off; off += align128(kKeys * ldq * elem);
    kb = off; off += align128(kKeys * ldg * elem);
    mv = off; off += with_values ? align128(kKeys * ldc * elem) : 0;
    e = off;  off += with_values ? align128(kRowWarps * 16 * (kKeys + kPad) * elem) : 0;
    scr = off; off += align128(kWarps * 2 * 16 * 16 * 4);
    red = off; off += align128(kHalves * kRows * 4 * 4);
    // clang-format on
    total = off;
  }
};

// dst[r][k] = src[row0 + r][k] for r < rows, k < K; zero for rows >= n or K <= k < kpad.
// src is row-major [n, K] in global memory; dst has leading dimension ldd (elements).
template <typename T>
__device__ __forceinline__ void load_rows(T* __restrict__ dst, int64_t ldd,
                                          const T* __restrict__ src, int64_t row0, int64_t n,
                                          int64_t K, int64_t kpad, int rows) {
  const bool vec = (K % 8 == 0) && ((reinterpret_cast<uintptr_t>(src) & 15) == 0);
  if (vec) {  // 16-byte loads: 8 elements; K % 8 == 0 so a chunk is all in or all out
    const int64_t chunks = kpad / 8;
    for (int64_t idx = threadIdx.x; idx < rows * chunks; idx += kThreads) {
      const int64_t r = idx / chunks, k = (idx % chunks) * 8;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (row0 + r < n && k < K) v = *reinterpret_cast<const uint4*>(src + (row0 + r) * K + k);
      *reinterpret_cast<uint4*>(dst + r * ldd + k) = v;
    }
  } else {
    const T zero = from_float<T>(0.f);
    for (int64_t idx = threadIdx.x; idx < rows * kpad; idx += kThreads) {
      const int64_t r = idx / kpad, k = idx % kpad;
      dst[r * ldd + k] = (row0 + r < n && k < K) ? src[(row0 + r) * K + k] : zero;
    }
  }
}

// kStats = true: pass 1 (writes stats[:, 0:2]); false: pass 2 (o and stats[:, 2]).
// (Separate __restrict__ pointer parameters rather than a SpatialParams: see
// spatial_fwd_scalar.cu.)
template <typename T, bool kStats, int kMaxCFrag>
__global__ void __launch_bounds__(kThreads)
    spatial_wmma_kernel(const T* __restrict__ theta, const T* __restrict__ phi,
                        const T* __restrict__ eta, const T* __restrict__ rho,
                        const T* __restrict__ mu, const float* __restrict__ musum,
                        float* __restrict__ o, float* __restrict__ stats, SpatialSizes sz) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 MMAs need sm_80; the host never launches this path there (supported())
#else
  extern __shared__ __align__(128) unsigned char smem[];
  const int64_t n = sz.n, c = sz.c;
  const Layout lay(sz, sizeof(T), !kStats);
  T* qa = reinterpret_cast<T*>(smem + lay.qa);
  T* qb = reinterpret_cast<T*>(smem + lay.qb);
  T* ka = reinterpret_cast<T*>(smem + lay.ka);
  T* kb = reinterpret_cast<T*>(smem + lay.kb);
  T* mv = reinterpret_cast<T*>(smem + lay.mv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rw = warp % kRowWarps, half = warp / kRowWarps;  // row block, half
  T* ew = reinterpret_cast<T*>(smem + lay.e) + rw * 16 * (kKeys + kPad);
  float* scr_a = reinterpret_cast<float*>(smem + lay.scr) + warp * 2 * 256;
  float* scr_b = scr_a + 256;
  float* red = reinterpret_cast<float*>(smem + lay.red);  // [kHalves][kRows][4]

  const int64_t b = blockIdx.y, i0 = int64_t(blockIdx.x) * kRows;
  const BatchInputs<T> in(theta, phi, eta, rho, mu, b, n, sz.d, sz.dg, c);
  float* st = stats + b * 3 * n;

  // This lane's row (of the warp's 16) in the element-wise steps (columns: rotated_col).
  const int row = lane >> 1;
  const int brow = rw * 16 + row;  // row within the block
  const int64_t i = i0 + brow;
  const bool row_ok = i < n;
  float la = 0.f, lb = 0.f;
  if (!kStats && row_ok) {
    la = st[i];
    lb = st[n + i];
  }
  float ma = -INFINITY, sa = 0.f, mb = -INFINITY, sb = 0.f;  // pass 1 state
  float esum = 0.f;                                          // pass 2: sum_j e_ij
  const int ncf = static_cast<int>(lay.cpad / 16);           // C fragments
  // this half's C fragments: half * nhf + f for f < nhf (a contiguous half; interleaved
  // halves made ptxas spill on sm_80)
  const int nhf = (ncf + 1) / 2;

  FragAcc acc[kMaxCFrag];
#pragma unroll
  for (int f = 0; f < kMaxCFrag; ++f) wm::fill_fragment(acc[f], 0.f);

  load_rows(qa, lay.ldq, in.theta, i0, n, sz.d, lay.dpad, kRows);
  load_rows(qb, lay.ldg, in.eta, i0, n, sz.dg, lay.dgpad, kRows);

  for (int64_t j0 = 0; j0 < n; j0 += kKeys) {
    __syncthreads();  // the previous tile's ka/kb/mv are no longer read
    load_rows(ka, lay.ldq, in.phi, j0, n, sz.d, lay.dpad, kKeys);
    load_rows(kb, lay.ldg, in.rho, j0, n, sz.dg, lay.dgpad, kKeys);
    if (!kStats) load_rows(mv, lay.ldc, in.mu, j0, n, c, lay.cpad, kKeys);
    __syncthreads();

#pragma unroll 1
    for (int kf = half * kKeyBlocks; kf < (half + 1) * kKeyBlocks; ++kf) {  // this half's keys
      FragAcc fa, fb;
      wm::fill_fragment(fa, 0.f);
      wm::fill_fragment(fb, 0.f);
      dot_block(fa, qa + rw * 16 * lay.ldq, ka + kf * 16 * lay.ldq, lay.ldq, lay.dpad);
      dot_block(fb, qb + rw * 16 * lay.ldg, kb + kf * 16 * lay.ldg, lay.ldg, lay.dgpad);
      wm::store_matrix_sync(scr_a, fa, 16, wm::mem_row_major);
      wm::store_matrix_sync(scr_b, fb, 16, wm::mem_row_major);
      __syncwarp();
#pragma unroll 2
      for (int t = 0; t < 8; ++t) {
        const int cl = rotated_col(lane, t);  // column within the 16-key block
        const int64_t j = j0 + kf * 16 + cl;
        const float av = scr_a[row * 16 + cl], bv = scr_b[row * 16 + cl];
        if (kStats) {
          if (j < n) {
            lse_push(ma, sa, av);
            lse_push(mb, sb, bv);
          }
        } else {
          float e = 0.f;
          // degree 7: e is rounded to T (bfloat16, 2^-9) right below
          if (row_ok && j < n) e = pair_weight<7>(av, bv, la, lb);
          // L must sum the same rounded weights the value product uses: then the
          // rounding error multiplies mu_j - mean(mu), not mu_j (which may be large).
          const T e_t = from_float<T>(e);
          esum += to_float(e_t);
          ew[row * (kKeys + kPad) + kf * 16 + cl] = e_t;
        }
      }
      __syncwarp();  // scratch is rewritten by the next block; e is read below
    }

    if (!kStats) {
      __syncthreads();  // both halves' e of the row block are in ew
#pragma unroll 1
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::row_major> fe;
        wm::load_matrix_sync(fe, ew + kk * 16, kKeys + kPad);
#pragma unroll
        for (int f = 0; f < kMaxCFrag; ++f) {
          const int cf = half * nhf + f;
          if (f < nhf && cf < ncf) {
            wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::row_major> fm;
            wm::load_matrix_sync(fm, mv + kk * 16 * lay.ldc + cf * 16,
                                 static_cast<unsigned>(lay.ldc));
            wm::mma_sync(acc[f], fe, fm, acc[f]);
          }
        }
      }
      // ew, ka, kb, mv are rewritten after the next tile's first __syncthreads
    }
  }

  if (kStats) {
    lse_merge_lanes<2>(ma, sa);
    lse_merge_lanes<2>(mb, sb);
    if (half == 1 && (lane & 1) == 0) {  // hand this half's keys to the pair's half 0
      float* r = red + brow * 4;
      r[0] = ma, r[1] = sa, r[2] = mb, r[3] = sb;
    }
    __syncthreads();
    if (half == 0 && row_ok && (lane & 1) == 0) {
      const float* r = red + brow * 4;
      lse_merge(ma, sa, r[0], r[1]);
      lse_merge(mb, sb, r[2], r[3]);
      st[i] = ma + logf(sa);
      st[n + i] = mb + logf(sb);
    }
    return;
  }

  esum = lane_sum<2>(esum);
  if ((lane & 1) == 0) red[half * kRows + brow] = esum;
  __syncthreads();
  // both halves add the two partial sums in the same order: the same L
  const float lsum = float(n) + (red[brow] + red[kRows + brow]);
  if (half == 0 && row_ok && (lane & 1) == 0) st[2 * n + i] = lsum;
  const float inv = 1.f / lsum;
  float* ob = o + b * n * c;
  const float* ms = musum + b * c;
#pragma unroll
  for (int f = 0; f < kMaxCFrag; ++f) {
    // every warp takes every step (the barriers stay block-uniform); fragments past
    // this half's (f >= nhf: zeros) are not written
    const int cf = half * nhf + f;
    wm::store_matrix_sync(scr_a, acc[f], 16, wm::mem_row_major);
    __syncwarp();
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int cl = rotated_col(lane, t);
      const int64_t col = int64_t(cf) * 16 + cl;
      if (row_ok && f < nhf && col < c) ob[i * c + col] = (ms[col] + scr_a[row * 16 + cl]) * inv;
    }
    __syncwarp();
  }
#endif
}

// Largest dynamic shared memory a block may opt in to on the current device.
int64_t smem_optin_limit() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
      cudaSuccess)
    return 0;
  return bytes;
}

// Whether the tensor-core path runs this problem (bfloat16 only, see the top).
bool supported(int device_major, const SpatialSizes& sz) {
  using T = __nv_bfloat16;
  if (device_major < 8 || sz.d > kMaxD || sz.dg > kMaxD || sz.c > kMaxC) return false;
  if (!runs_sm80_code(spatial_wmma_kernel<T, true, 1>)) return false;
  const Layout lay(sz, sizeof(T), true);
  return lay.total <= smem_optin_limit();
}

template <typename T, bool kStats, int kMaxCFrag>
cudaError_t launch_pass(const SpatialParams& p, cudaStream_t stream) {
  const Layout lay(p.sz, sizeof(T), !kStats);
  auto kernel = spatial_wmma_kernel<T, kStats, kMaxCFrag>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(lay.total));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((p.sz.n + kRows - 1) / kRows),
                  static_cast<unsigned>(p.sz.batch));
  kernel<<<grid, kThreads, static_cast<size_t>(lay.total), stream>>>(
      typed<T>(p.theta), typed<T>(p.phi), typed<T>(p.eta), typed<T>(p.rho), typed<T>(p.mu), p.musum,
      p.o, p.stats, p.sz);
  return cudaGetLastError();
}

}  // namespace

bool spatial_fwd_tc_supported(DType dt, const SpatialSizes& sz, int device_major) {
  return dt == DType::kBFloat16 && supported(device_major, sz);
}

// Both passes on the tensor cores (call only where spatial_fwd_tc_supported()).
cudaError_t spatial_fwd_tc(const SpatialParams& p, cudaStream_t stream) {
  using T = __nv_bfloat16;
  if (p.dtype != DType::kBFloat16) return cudaErrorNotSupported;
  cudaError_t err = launch_pass<T, true, 1>(p, stream);
  if (err != cudaSuccess) return err;
  // fragments per warp: half of C's 16-column fragments
  if (p.sz.c <= 64) return launch_pass<T, false, 2>(p, stream);
  return launch_pass<T, false, kMaxC / 16 / kHalves>(p, stream);
}

}  // namespace ggnet::cuda
