// simmim/ops/fused.hpp: element-wise fusions of the ViT encoder's forward, each equal to a composition
// of unfused ops (stated per function) but reading and writing each row once while it is in cache.
//
// SIMD path (kernels/simd.hpp) when it is enabled for T, scalar loops otherwise. bias_gelu_forward and
// residual_layernorm_forward give the same bits as their unfused composition on the same build (same
// per-lane GELU code, same LayerNorm row function); mask_blend_pos_forward equals the encoder's scalar
// loop up to rounding (the compiler may contract a * b + c into an FMA differently in the two).
#pragma once

#include <cmath>
#include <cstddef>

#include "simmim/kernels/simd.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/layernorm.hpp"

namespace simmim::ops {

/// pre (M, F) = in_no_bias (M, F) + bias (F) (saved for gelu_backward), act (M, F) = gelu(pre).
/// Equals: pre = in_no_bias + bias per row; gelu_forward(act, pre, M * F). Lets a model call
/// linear_forward without its bias and add the bias here. pre may be in_no_bias (in place); act must
/// not alias pre or in_no_bias.
template <class T>
void bias_gelu_forward(T* act, T* pre, const T* in_no_bias, const T* bias, std::ptrdiff_t M, std::ptrdiff_t F) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        using B = kernels::Batch<T>;
        constexpr std::ptrdiff_t W = kernels::lanes<T>;
#pragma omp parallel for schedule(static) if (M * F >= kernels::kParallelMinWork)
        for (std::ptrdiff_t r = 0; r < M; ++r) {
            const T* in_row = in_no_bias + r * F;
            T* pre_row = pre + r * F;
            T* act_row = act + r * F;
            std::ptrdiff_t i = 0;
            for (; i + W <= F; i += W) {
                const B z = B::load_unaligned(in_row + i) + B::load_unaligned(bias + i);
                z.store_unaligned(pre_row + i);
                detail::gelu<T>(z).store_unaligned(act_row + i);
            }
            if (i < F) {
                const std::ptrdiff_t n = F - i;
                const B z = kernels::load_partial(in_row + i, n) + kernels::load_partial(bias + i, n);
                kernels::store_partial(pre_row + i, z, n);
                kernels::store_partial(act_row + i, detail::gelu<T>(z), n);
            }
        }
        return;
    }
#endif
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
#pragma omp parallel for schedule(static) if (M * F >= kernels::kParallelMinWork)
    for (std::ptrdiff_t r = 0; r < M; ++r)
        for (std::ptrdiff_t i = 0; i < F; ++i) {
            const T z = in_no_bias[r * F + i] + bias[i];
            pre[r * F + i] = z;
            act[r * F + i] = T(0.5) * z * (T(1) + std::erf(z * inv_sqrt2));
        }
}

/// sum_out (M, D) = x (M, D) + residual (M, D); ln_out (M, D) = LayerNorm(sum_out) with weight, bias (D),
/// caching mean (M) and rstd (M) for layernorm_backward. Equals: sum_out = x + residual;
/// layernorm_forward(ln_out, mean, rstd, sum_out, weight, bias, M, D, eps). sum_out may be x or
/// residual (in place); ln_out must not alias any input.
template <class T>
void residual_layernorm_forward(T* sum_out, T* ln_out, T* mean, T* rstd, const T* x, const T* residual, const T* weight,
                                const T* bias, std::ptrdiff_t M, std::ptrdiff_t D, T eps) {
#pragma omp parallel for schedule(static) if (M * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t r = 0; r < M; ++r) {
        const T* x_row = x + r * D;
        const T* res_row = residual + r * D;
        T* sum_row = sum_out + r * D;
        std::ptrdiff_t i = 0;
#if SIMMIM_SIMD
        if constexpr (kernels::simd_enabled<T>) {
            using B = kernels::Batch<T>;
            constexpr std::ptrdiff_t W = kernels::lanes<T>;
            for (; i + W <= D; i += W)
                (B::load_unaligned(x_row + i) + B::load_unaligned(res_row + i)).store_unaligned(sum_row + i);
        }
#endif
        for (; i < D; ++i) sum_row[i] = x_row[i] + res_row[i];
        detail::layernorm_row(ln_out + r * D, mean[r], rstd[r], sum_row, weight, bias, D, eps);
    }
}

/// The ViT encoder's token assembly, x0 (B, L + 1, D):
///   x0[b, 0]     = cls_token + pos_embed[0]
///   x0[b, 1 + l] = embed[b, l] * (1 - mask[b, l]) + mask_token * mask[b, l] + pos_embed[1 + l]
/// embed (B, L, D) patch embeddings, mask (B, L) with 1 = masked, mask_token and cls_token (D),
/// pos_embed (L + 1, D). x0 must not alias any input.
template <class T>
void mask_blend_pos_forward(T* x0, const T* embed, const T* mask, const T* mask_token, const T* cls_token,
                            const T* pos_embed, std::ptrdiff_t B, std::ptrdiff_t L, std::ptrdiff_t D) {
    const std::ptrdiff_t N = L + 1;
#pragma omp parallel for schedule(static) if (B * N * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t row = 0; row < B * N; ++row) {
        const std::ptrdiff_t b = row / N, t = row % N;  // token t of sample b
        T* out = x0 + row * D;
        const T* pe = pos_embed + t * D;
        std::ptrdiff_t i = 0;
        if (t == 0) {
#if SIMMIM_SIMD
            if constexpr (kernels::simd_enabled<T>) {
                using V = kernels::Batch<T>;
                constexpr std::ptrdiff_t W = kernels::lanes<T>;
                for (; i + W <= D; i += W) (V::load_unaligned(cls_token + i) + V::load_unaligned(pe + i)).store_unaligned(out + i);
            }
#endif
            for (; i < D; ++i) out[i] = cls_token[i] + pe[i];
            continue;
        }
        const T w = mask[b * L + t - 1];
        const T keep = T(1) - w;
        const T* e = embed + (b * L + t - 1) * D;
#if SIMMIM_SIMD
        if constexpr (kernels::simd_enabled<T>) {
            using V = kernels::Batch<T>;
            constexpr std::ptrdiff_t W = kernels::lanes<T>;
            const V keep_b(keep), w_b(w);
            for (; i + W <= D; i += W)
                (V::load_unaligned(e + i) * keep_b + V::load_unaligned(mask_token + i) * w_b + V::load_unaligned(pe + i))
                    .store_unaligned(out + i);
        }
#endif
        for (; i < D; ++i) out[i] = e[i] * keep + mask_token[i] * w + pe[i];
    }
}

/// The token assembly of an encoder without a cls token, x0 (B, L, D):
///   x0[b, l] = embed[b, l] * (1 - mask[b, l]) + mask_token * mask[b, l]
/// embed (B, L, D), mask (B, L) with 1 = masked, mask_token (D). x0 must not alias any input.
template <class T>
void mask_blend_forward(T* x0, const T* embed, const T* mask, const T* mask_token, std::ptrdiff_t B, std::ptrdiff_t L,
                        std::ptrdiff_t D) {
#pragma omp parallel for schedule(static) if (B * L * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t row = 0; row < B * L; ++row) {
        const T w = mask[row];
        const T keep = T(1) - w;
        const T* e = embed + row * D;
        T* out = x0 + row * D;
        for (std::ptrdiff_t i = 0; i < D; ++i) out[i] = e[i] * keep + mask_token[i] * w;
    }
}

}  // namespace simmim::ops
