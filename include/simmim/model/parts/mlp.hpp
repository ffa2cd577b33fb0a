// simmim/model/parts/mlp.hpp: the transformer MLP, fc2(gelu(fc1(x))) (exact erf GELU), with its parameters
// "<prefix>fc1.weight" [F, D], "<prefix>fc1.bias" [F], "<prefix>fc2.weight" [D, F], "<prefix>fc2.bias" [D].
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

#include "simmim/core/tensor.hpp"
#include "simmim/ops/copy.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/linear.hpp"

namespace simmim {

/// Rows of N tokens of width D through a hidden layer of width F.
template <class T, int N, int D, int F>
class Mlp {
public:
    struct Cache {
        BatchTensor<T, Shape<N, F>> fc1, act;  // pre-activation (kept for the GELU backward) and activation
        template <class Fn>
        void for_each(Fn&& f) {
            f(fc1);
            f(act);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };
    struct Scratch {
        BatchTensor<T, Shape<N, F>> d_fc1;
        template <class Fn>
        void for_each(Fn&& f) {
            f(d_fc1);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };

    Mlp() = default;
    /// Weights drawn with `init` (fc2's then multiplied by fc2_scale), zero biases.
    Mlp(ParamArena<T>& arena, const std::string& prefix, Init init, double fc2_scale = 1.0)
        : fc1_w(arena.template add<Shape<F, D>>(prefix + "fc1.weight", init, true)),
          fc1_b(arena.template add<Shape<F>>(prefix + "fc1.bias", Init::Zeros, false)),
          fc2_w(arena.template add<Shape<D, F>>(prefix + "fc2.weight", init, true, 0.0, fc2_scale)),
          fc2_b(arena.template add<Shape<D>>(prefix + "fc2.bias", Init::Zeros, false)) {}

    /// out (B, N, D) = fc2(gelu(fc1(in))); fills c.
    void forward(T* out, const T* in, int B, Cache& c) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        // fc1 = in W1^T + b1 (pre-activation, kept for backward); act = gelu(fc1), both in the GEMM's epilogue
        ops::linear_bias_gelu_forward(c.act.data(), c.fc1.data(), in, fc1_w.data(), fc1_b.data(), M, D, F);
        ops::linear_forward(out, c.act.data(), fc2_w.data(), fc2_b.data(), M, F, D);
    }
    /// din (B, N, D) = d in from dout (overwritten); accumulates the parameter gradients.
    void backward(T* din, const T* dout, const T* in, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        // d_fc1 = (dout W2) * gelu'(fc1), the GELU derivative in the input-gradient GEMM's epilogue
        ops::linear_backward_gelu(s.d_fc1.data(), fc2_w.grad(), fc2_b.grad(), dout, c.act.data(), c.fc1.data(), fc2_w.data(), M, F, D);
        ops::linear_backward(din, fc1_w.grad(), fc1_b.grad(), s.d_fc1.data(), in, fc1_w.data(), M, D, F, T(0));
    }

    Param<T, Shape<F, D>> fc1_w;
    Param<T, Shape<F>> fc1_b;
    Param<T, Shape<D, F>> fc2_w;
    Param<T, Shape<D>> fc2_b;
};

}  // namespace simmim
