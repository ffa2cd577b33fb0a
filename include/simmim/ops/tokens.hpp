// simmim/ops/tokens.hpp: dropping leading tokens (a cls token) from a token sequence, and its backward.
#pragma once

#include <algorithm>
#include <cstddef>

namespace simmim::ops {

/// out (B, N - skip, D) = tokens (B, N, D) without the first `skip` rows of each sample.
template <class T>
void drop_leading_tokens(T* out, const T* tokens, int B, int N, int skip, int D) {
    const std::ptrdiff_t keep = static_cast<std::ptrdiff_t>(N - skip) * D;
    for (int b = 0; b < B; ++b)
        std::copy_n(tokens + (static_cast<std::ptrdiff_t>(b) * N + skip) * D, keep, out + static_cast<std::ptrdiff_t>(b) * keep);
}

/// dtokens (B, N, D) = [0 (skip rows) ; dout (B, N - skip, D)] per sample (overwrites).
template <class T>
void drop_leading_tokens_backward(T* dtokens, const T* dout, int B, int N, int skip, int D) {
    const std::ptrdiff_t keep = static_cast<std::ptrdiff_t>(N - skip) * D;
    std::fill_n(dtokens, static_cast<std::ptrdiff_t>(B) * N * D, T(0));
    for (int b = 0; b < B; ++b)
        std::copy_n(dout + static_cast<std::ptrdiff_t>(b) * keep, keep, dtokens + (static_cast<std::ptrdiff_t>(b) * N + skip) * D);
}

}  // namespace simmim::ops
