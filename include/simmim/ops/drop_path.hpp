// simmim/ops/drop_path.hpp: stochastic depth (timm's DropPath, as BEiT and the official SimMIM ViT use
// it) and the layer-scaled residual it sits in:  out = x + scale[b] * gamma * branch.
//
// DropPath with rate r keeps a sample's residual branch with probability 1 - r and then multiplies it
// by 1 / (1 - r), or drops it (multiplies by 0). Here the keep/drop draw is a pure function of
// (seed, step, block, branch, sample), so a resumed run draws the same masks, and the forward hands
// the backward the per-sample factors it used (0 or 1 / (1 - r); exactly 1 when drop path is off).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

/// BEiT's stochastic depth decay rule: the drop rate of block `block` (0-based) out of `depth` is
/// linspace(0, rate, depth)[block] = rate * block / (depth - 1) (0 when depth == 1), computed in double
/// (torch.linspace runs in float32; the difference is a rounding of the rate, not of the rule).
inline double drop_path_block_rate(double rate, int block, int depth) {
    if (depth <= 1) return 0.0;
    return rate * static_cast<double>(block) / static_cast<double>(depth - 1);
}

/// The factor DropPath applies to one sample's residual branch: 0 when dropped, 1 / (1 - r) when kept,
/// 1 when r == 0. The draw u ~ U[0, 1) comes from Rng(derive_seed(seed, step, block, branch, sample))
/// and the branch is kept when u >= r, as timm's floor(1 - r + u). Throws std::invalid_argument unless
/// 0 <= r < 1.
inline double drop_path_scale(double r, std::uint64_t seed, std::int64_t step, int block, int branch, int sample) {
    if (!(r >= 0.0 && r < 1.0)) throw std::invalid_argument("drop_path_scale: rate must lie in [0, 1), found " + std::to_string(r));
    if (r == 0.0) return 1.0;
    Rng rng(derive_seed(seed, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(block), static_cast<std::uint64_t>(branch),
                        static_cast<std::uint64_t>(sample)));
    return rng.uniform() >= r ? 1.0 / (1.0 - r) : 0.0;
}

/// out (B, N, D) = x + scale[b] * (gamma * branch), with gamma (D) the layer scale and scale (B) the
/// per-sample drop path factors. out may alias x.
template <class T>
void layer_scale_residual_forward(T* out, const T* x, const T* branch, const T* gamma, const T* scale, std::ptrdiff_t B,
                                  std::ptrdiff_t N, std::ptrdiff_t D) {
#pragma omp parallel for schedule(static) if (B * N * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t row = 0; row < B * N; ++row) {
        const T s = scale[row / N];
        const T* br = branch + row * D;
        const T* xr = x + row * D;
        T* o = out + row * D;
        for (std::ptrdiff_t d = 0; d < D; ++d) o[d] = xr[d] + gamma[d] * br[d] * s;
    }
}

/// Backward of layer_scale_residual_forward for the branch and gamma (the identity path is the
/// caller's): dbranch (B, N, D) = scale[b] * gamma * dout (overwritten), dgamma (D) += sum over rows of
/// scale[b] * branch * dout. The row sum runs over a fixed number of row chunks added in a fixed order,
/// so it is bit-identical whatever the thread count.
template <class T>
void layer_scale_residual_backward(T* dbranch, T* dgamma, const T* dout, const T* branch, const T* gamma, const T* scale,
                                   std::ptrdiff_t B, std::ptrdiff_t N, std::ptrdiff_t D) {
    constexpr std::ptrdiff_t kChunks = 32;
    const std::ptrdiff_t M = B * N, chunks = std::min(kChunks, M);
    std::vector<T> partial(static_cast<std::size_t>(chunks) * D, T(0));  // (chunks, D)
#pragma omp parallel for schedule(static) if (M * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t ch = 0; ch < chunks; ++ch) {
        T* pg = partial.data() + ch * D;
        for (std::ptrdiff_t row = ch * M / chunks; row < (ch + 1) * M / chunks; ++row) {
            const T s = scale[row / N];
            const T* dy = dout + row * D;
            const T* br = branch + row * D;
            T* db = dbranch + row * D;
            for (std::ptrdiff_t d = 0; d < D; ++d) {
                db[d] = gamma[d] * dy[d] * s;
                pg[d] += br[d] * dy[d] * s;
            }
        }
    }
    for (std::ptrdiff_t ch = 0; ch < chunks; ++ch)
        for (std::ptrdiff_t d = 0; d < D; ++d) dgamma[d] += partial[static_cast<std::size_t>(ch * D + d)];
}

}  // namespace simmim::ops
