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
#include <type_traits>

#include "simmim/kernels/dispatch.hpp"
#include "simmim/kernels/isa.hpp"
#include "simmim/kernels/simd.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/layernorm.hpp"
#include "simmim/ops/linear.hpp"

namespace simmim::ops {

// The GELU rows of the fused MLP epilogues, in the ISA namespace (kernels/isa.hpp): with simmim::kernels linked,
// the float epilogues run the copies compiled for the instruction set chosen at run time (kernels/dispatch.hpp).
SIMMIM_ISA_BEGIN
namespace gelu_rows {
/// One row of bias_gelu_forward: pre[i] = in[i] + bias[i], act[i] = gelu(pre[i]), i < n (pre may be in).
template <class T>
void bias_gelu_row(T* act, T* pre, const T* in, const T* bias, std::ptrdiff_t n) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        using B = kernels::Batch<T>;
        constexpr std::ptrdiff_t W = kernels::lanes<T>;
        std::ptrdiff_t i = 0;
        for (; i + W <= n; i += W) {
            const B z = B::load_unaligned(in + i) + B::load_unaligned(bias + i);
            z.store_unaligned(pre + i);
            detail::gelu<T>(z).store_unaligned(act + i);
        }
        if (i < n) {
            const std::ptrdiff_t r = n - i;
            const B z = kernels::load_partial(in + i, r) + kernels::load_partial(bias + i, r);
            kernels::store_partial(pre + i, z, r);
            kernels::store_partial(act + i, detail::gelu<T>(z), r);
        }
        return;
    }
#endif
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        const T z = in[i] + bias[i];
        pre[i] = z;
        act[i] = T(0.5) * z * (T(1) + std::erf(z * inv_sqrt2));
    }
}

/// One row of the fused GELU backward: d[i] = dact[i] * gelu'(pre[i]), i < n (d may be dact).
template <class T>
void gelu_backward_row(T* d, const T* dact, const T* pre, std::ptrdiff_t n) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        using B = kernels::Batch<T>;
        constexpr std::ptrdiff_t W = kernels::lanes<T>;
        std::ptrdiff_t i = 0;
        for (; i + W <= n; i += W)
            (B::load_unaligned(dact + i) * detail::gelu_derivative<T>(B::load_unaligned(pre + i))).store_unaligned(d + i);
        if (i < n) {
            const std::ptrdiff_t r = n - i;
            kernels::store_partial(d + i, kernels::load_partial(dact + i, r) * detail::gelu_derivative<T>(kernels::load_partial(pre + i, r)), r);
        }
        return;
    }
#endif
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
    const T inv_sqrt_2pi = T(0.39894228040143267793994605993438);
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        const T x = pre[i];
        const T cdf = T(0.5) * (T(1) + std::erf(x * inv_sqrt2));
        const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x * x);
        d[i] = dact[i] * (cdf + x * pdf);
    }
}

/// bias_gelu_row over a tile: row r of act (row stride ld_act) and c (ldc, pre-activation in, pre out).
template <class T>
void bias_gelu_tile(T* act, std::ptrdiff_t ld_act, T* c, std::ptrdiff_t ldc, const T* bias, std::ptrdiff_t rows,
                    std::ptrdiff_t cols) {
    for (std::ptrdiff_t r = 0; r < rows; ++r) bias_gelu_row(act + r * ld_act, c + r * ldc, c + r * ldc, bias, cols);
}

/// gelu_backward_row over a tile, in place in c (row stride ldc), pre with row stride ld_pre.
template <class T>
void gelu_backward_tile(T* c, std::ptrdiff_t ldc, const T* pre, std::ptrdiff_t ld_pre, std::ptrdiff_t rows, std::ptrdiff_t cols) {
    for (std::ptrdiff_t r = 0; r < rows; ++r) gelu_backward_row(c + r * ldc, c + r * ldc, pre + r * ld_pre, cols);
}
}  // namespace gelu_rows
SIMMIM_ISA_END

namespace detail {
template <class T>
struct BiasGeluEpilogue {
    const T* bias;
    T* act;
    std::ptrdiff_t ld_act;
    static void apply(const void* self, T* c, std::ptrdiff_t ldc, std::ptrdiff_t row, std::ptrdiff_t col,
                      std::ptrdiff_t rows, std::ptrdiff_t cols) {
        const auto& e = *static_cast<const BiasGeluEpilogue*>(self);
        T* act = e.act + row * e.ld_act + col;
#if defined(SIMMIM_EXTERN_KERNELS) && !defined(SIMMIM_BUILDING_KERNELS)
        if constexpr (std::is_same_v<T, float>) {
            kernels::dispatch::kernels<float>().bias_gelu_tile(act, e.ld_act, c, ldc, e.bias + col, rows, cols);
            return;
        }
#endif
        gelu_rows::bias_gelu_tile<T>(act, e.ld_act, c, ldc, e.bias + col, rows, cols);
    }
};

template <class T>
struct GeluBackwardEpilogue {
    const T* pre;
    std::ptrdiff_t ld_pre;
    static void apply(const void* self, T* c, std::ptrdiff_t ldc, std::ptrdiff_t row, std::ptrdiff_t col,
                      std::ptrdiff_t rows, std::ptrdiff_t cols) {
        const auto& e = *static_cast<const GeluBackwardEpilogue*>(self);
        const T* pre = e.pre + row * e.ld_pre + col;
#if defined(SIMMIM_EXTERN_KERNELS) && !defined(SIMMIM_BUILDING_KERNELS)
        if constexpr (std::is_same_v<T, float>) {
            kernels::dispatch::kernels<float>().gelu_backward_tile(c, ldc, pre, e.ld_pre, rows, cols);
            return;
        }
#endif
        gelu_rows::gelu_backward_tile<T>(c, ldc, pre, e.ld_pre, rows, cols);
    }
};
}  // namespace detail

/// pre (M, F) = in_no_bias (M, F) + bias (F) (saved for gelu_backward), act (M, F) = gelu(pre).
/// Equals: pre = in_no_bias + bias per row; gelu_forward(act, pre, M * F). Lets a model call
/// linear_forward without its bias and add the bias here. pre may be in_no_bias (in place); act must
/// not alias pre or in_no_bias.
template <class T>
void bias_gelu_forward(T* act, T* pre, const T* in_no_bias, const T* bias, std::ptrdiff_t M, std::ptrdiff_t F) {
#pragma omp parallel for schedule(static) if (M * F >= kernels::kParallelMinWork)
    for (std::ptrdiff_t r = 0; r < M; ++r) gelu_rows::bias_gelu_row(act + r * F, pre + r * F, in_no_bias + r * F, bias, F);
}

/// The first layer of an MLP, fused: pre (M, F) = in (M, K) weight (F, K)^T + bias (F), act (M, F) = gelu(pre).
/// The same bits as linear_forward(pre, in, weight, nullptr, ...) then bias_gelu_forward(act, pre, pre, bias, ...),
/// but the bias and GELU are applied to each tile of the product as the GEMM computes it (kernels::GemmEpilogue),
/// so pre is not read back from memory. act must not alias pre or in.
template <class T>
void linear_bias_gelu_forward(T* act, T* pre, const T* in, const T* weight, const T* bias, std::ptrdiff_t M,
                              std::ptrdiff_t K, std::ptrdiff_t F) {
    const detail::BiasGeluEpilogue<T> context{bias, act, F};
    const kernels::GemmEpilogue<T> epilogue{&detail::BiasGeluEpilogue<T>::apply, &context};
    kernels::gemm<T>(false, true, M, F, K, T(1), in, K, weight, K, T(0), pre, F, &epilogue);
}

/// The backward of gelu then a linear layer (an MLP's fc2), fused: with act = gelu(pre) the layer's input,
/// d_pre (M, F) = (dout (M, D) weight (D, F)) * gelu'(pre) (overwritten), dweight (D, F) += dout^T act and
/// dbias (D) += colsum(dout). The same values as linear_backward(d_act, ..., 0) then d_pre = 0,
/// gelu_backward(d_pre, d_act, pre, M F) (up to the sign of zeros), without the d_act buffer: the GELU
/// derivative is applied to each tile of the input-gradient product as it is computed. dbias may be null.
template <class T>
void linear_backward_gelu(T* d_pre, T* dweight, T* dbias, const T* dout, const T* act, const T* pre, const T* weight,
                          std::ptrdiff_t M, std::ptrdiff_t F, std::ptrdiff_t D) {
    const detail::GeluBackwardEpilogue<T> context{pre, F};
    const kernels::GemmEpilogue<T> epilogue{&detail::GeluBackwardEpilogue<T>::apply, &context};
    kernels::gemm<T>(false, false, M, F, D, T(1), dout, D, weight, F, T(0), d_pre, F, &epilogue);
    linear_backward<T>(nullptr, dweight, dbias, dout, act, weight, M, F, D);
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
