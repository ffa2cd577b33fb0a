// simmim/model/parts/layer_norm.hpp: a LayerNorm with its parameters, "<prefix>weight" [D] (ones) and
// "<prefix>bias" [D] (zeros), neither weight-decayed.
#pragma once

#include <cstddef>
#include <string>

#include "simmim/core/tensor.hpp"
#include "simmim/ops/layernorm.hpp"

namespace simmim {

template <class T, int D>
class LayerNormParams {
public:
    LayerNormParams() = default;
    LayerNormParams(ParamArena<T>& arena, const std::string& prefix)
        : weight(arena.template add<Shape<D>>(prefix + "weight", Init::Ones, false)),
          bias(arena.template add<Shape<D>>(prefix + "bias", Init::Zeros, false)) {}

    /// out (M, D) = LayerNorm(in (M, D)), caching mean and rstd (M).
    void forward(T* out, T* mean, T* rstd, const T* in, std::ptrdiff_t M, T eps) const {
        ops::layernorm_forward(out, mean, rstd, in, weight.data(), bias.data(), M, D, eps);
    }
    /// din (M, D) += d in from dout (M, D); accumulates the weight and bias gradients.
    void backward(T* din, const T* dout, const T* in, const T* mean, const T* rstd, std::ptrdiff_t M) const {
        ops::layernorm_backward(din, weight.grad(), bias.grad(), dout, in, mean, rstd, weight.data(), M, D);
    }

    Param<T, Shape<D>> weight, bias;
};

/// What a LayerNorm over rows of N tokens keeps for its backward: the output and the row statistics.
template <class T, int N, int D>
struct NormCache {
    BatchTensor<T, Shape<N, D>> out;   // (B, N, D)
    BatchTensor<T, Shape<N>> mean, rstd;  // (B, N)
    template <class Fn>
    void for_each(Fn&& f) {
        f(out);
        f(mean);
        f(rstd);
    }
    void resize(std::size_t B) {
        for_each([&](auto& t) { t.resize(B); });
    }
};

}  // namespace simmim
