// Out-of-line, multiversioned instances of the tile routines in tile_math.h.  This file
// includes no torch header, so it compiles in about a second.
#include "cpu/tile_math.h"

namespace ggnet::cpu {

GGNET_MULTIVERSION
void lse_update(const float* a, std::int64_t nq, std::int64_t nk, float* m, float* s) {
  lse_update_impl(a, nq, nk, m, s);
}

void lse_update(const double* a, std::int64_t nq, std::int64_t nk, double* m, double* s) {
  lse_update_impl(a, nq, nk, m, s);
}

GGNET_MULTIVERSION
void fwd_weights(float* a, const float* b, std::int64_t nq, std::int64_t nk, const float* lse_a,
                 const float* lse_b, float* esum) {
  fwd_weights_impl(a, b, nq, nk, lse_a, lse_b, esum);
}

void fwd_weights(double* a, const double* b, std::int64_t nq, std::int64_t nk, const double* lse_a,
                 const double* lse_b, double* esum) {
  fwd_weights_impl(a, b, nq, nk, lse_a, lse_b, esum);
}

GGNET_MULTIVERSION
void bwd_prepare(float* a, float* b, float* ds, std::int64_t nq, std::int64_t nk,
                 const float* lse_a, const float* lse_b, const float* L, const float* D, float* R) {
  bwd_prepare_impl(a, b, ds, nq, nk, lse_a, lse_b, L, D, R);
}

void bwd_prepare(double* a, double* b, double* ds, std::int64_t nq, std::int64_t nk,
                 const double* lse_a, const double* lse_b, const double* L, const double* D,
                 double* R) {
  bwd_prepare_impl(a, b, ds, nq, nk, lse_a, lse_b, L, D, R);
}

GGNET_MULTIVERSION
void bwd_finish(float* a, float* b, float* ds, std::int64_t nq, std::int64_t nk, const float* L,
                const float* R) {
  bwd_finish_impl(a, b, ds, nq, nk, L, R);
}

void bwd_finish(double* a, double* b, double* ds, std::int64_t nq, std::int64_t nk, const double* L,
                const double* R) {
  bwd_finish_impl(a, b, ds, nq, nk, L, R);
}

GGNET_MULTIVERSION
void joint_fwd_block(float* s, std::int64_t nq, std::int64_t nk, float* m, float* l, float* alpha) {
  joint_fwd_block_impl(s, nq, nk, m, l, alpha);
}

void joint_fwd_block(double* s, std::int64_t nq, std::int64_t nk, double* m, double* l,
                     double* alpha) {
  joint_fwd_block_impl(s, nq, nk, m, l, alpha);
}

GGNET_MULTIVERSION
void joint_bwd_tile(float* s, float* dp, std::int64_t nq, std::int64_t nk, const float* lse,
                    const float* D) {
  joint_bwd_tile_impl(s, dp, nq, nk, lse, D);
}

void joint_bwd_tile(double* s, double* dp, std::int64_t nq, std::int64_t nk, const double* lse,
                    const double* D) {
  joint_bwd_tile_impl(s, dp, nq, nk, lse, D);
}

}  // namespace ggnet::cpu
