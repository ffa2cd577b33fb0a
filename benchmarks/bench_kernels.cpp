// benchmarks/bench_kernels.cpp: the SIMD element-wise kernels (ops/gelu.hpp, ops/layernorm.hpp,
// ops/masked_l1.hpp) against their scalar `_reference`, and the fusions of ops/fused.hpp against their
// unfused composition, in float, at the shapes of the presets:
//   vit-t4-32, batch 64:    M = 64 * 65 rows, D = 192, F = 768
//   vit-s16-224, batch 8:   M = 8 * 197 rows, D = 384, F = 1536
//   masked L1:              (B, C, S, S) = (128, 3, 192, 192), token grid 48 x 48 (p = 4)
// Every pair is validated on its shape before timing (the process exits 1 on a mismatch). Counters:
// items/s = elements of the op's main tensor, bytes/s = the op's minimal memory traffic.
// Build: g++ -std=c++20 -O3 -march=native -fopenmp -Iinclude -I/usr/include/eigen3 benchmarks/bench_kernels.cpp
//        -lbenchmark -lpthread
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/kernels/simd.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/layernorm.hpp"
#include "simmim/ops/masked_l1.hpp"

namespace {

using simmim::ops::detail::kLayerNormChunks;
namespace ops = simmim::ops;

struct RowShape {
    const char* name;
    std::ptrdiff_t M, D, F;
};
const RowShape kRowShapes[] = {{"vit-t4-32_b64", 64 * 65, 192, 768}, {"vit-s16-224_b8", 8 * 197, 384, 1536}};

struct ImageShape {
    const char* name;
    int B, C, S, p;
    std::ptrdiff_t pixels() const { return static_cast<std::ptrdiff_t>(B) * C * S * S; }
    std::ptrdiff_t tokens() const { return static_cast<std::ptrdiff_t>(B) * (S / p) * (S / p); }
};
const ImageShape kImageShape = {"B128_C3_S192_p4", 128, 3, 192, 4};

std::vector<float> normal(std::size_t n, std::uint64_t seed, double mean = 0.0, double stddev = 1.0) {
    simmim::Rng rng(simmim::derive_seed(2024, seed, n));
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(mean + stddev * rng.normal());
    return v;
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(b[i]) * b[i];
    }
    return std::sqrt(num / den);
}

void require_close(const char* what, const char* shape, double err, double limit = 1e-5) {
    if (!(err <= limit)) {
        std::fprintf(stderr, "bench_kernels: %s disagrees with its reference on %s: rel. L2 error %.3g (limit %.1g)\n", what, shape,
                     err, limit);
        std::exit(1);
    }
    std::printf("validated %-34s on %-16s rel. L2 error %.2g\n", what, shape, err);
}

/// Inputs of the row kernels on one shape.
struct RowBuffers {
    explicit RowBuffers(const RowShape& s)
        : x(normal(s.M * s.D, 1, 0.3, 1.5)), res(normal(s.M * s.D, 2)), w(normal(s.D, 3, 1.0, 0.2)), b(normal(s.D, 4)),
          dy(normal(s.M * s.D, 5)), y(s.M * s.D), dx(s.M * s.D, 0.0f), dw(s.D, 0.0f), db(s.D, 0.0f), mean(s.M), rstd(s.M),
          h(normal(s.M * s.F, 6, 0.0, 2.0)), hbias(normal(s.F, 7)), dh(normal(s.M * s.F, 8)), act(s.M * s.F),
          pre(s.M * s.F), dpre(s.M * s.F, 0.0f) {
        ops::layernorm_forward_reference(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.M, s.D, 1e-6f);
    }
    std::vector<float> x, res, w, b, dy, y, dx, dw, db, mean, rstd;  // (M, D) rows, (D) params, (M) stats
    std::vector<float> h, hbias, dh, act, pre, dpre;                 // (M, F) MLP hidden, (F) fc1 bias
};

void validate_rows(const RowShape& s) {
    const float eps = 1e-6f;
    RowBuffers a(s), r(s);
    ops::gelu_forward(a.act.data(), a.h.data(), s.M * s.F);
    ops::gelu_forward_reference(r.act.data(), r.h.data(), s.M * s.F);
    require_close("gelu_forward", s.name, relative_l2(a.act, r.act));
    ops::gelu_backward(a.dpre.data(), a.dh.data(), a.h.data(), s.M * s.F);
    ops::gelu_backward_reference(r.dpre.data(), r.dh.data(), r.h.data(), s.M * s.F);
    require_close("gelu_backward", s.name, relative_l2(a.dpre, r.dpre));
    ops::layernorm_forward(a.y.data(), a.mean.data(), a.rstd.data(), a.x.data(), a.w.data(), a.b.data(), s.M, s.D, eps);
    ops::layernorm_forward_reference(r.y.data(), r.mean.data(), r.rstd.data(), r.x.data(), r.w.data(), r.b.data(), s.M, s.D, eps);
    require_close("layernorm_forward", s.name, relative_l2(a.y, r.y));
    ops::layernorm_backward(a.dx.data(), a.dw.data(), a.db.data(), a.dy.data(), a.x.data(), r.mean.data(), r.rstd.data(), a.w.data(),
                            s.M, s.D);
    ops::layernorm_backward_reference(r.dx.data(), r.dw.data(), r.db.data(), r.dy.data(), r.x.data(), r.mean.data(), r.rstd.data(),
                                      r.w.data(), s.M, s.D);
    require_close("layernorm_backward din", s.name, relative_l2(a.dx, r.dx));
    require_close("layernorm_backward dweight", s.name, relative_l2(a.dw, r.dw));
    // fused vs unfused
    ops::bias_gelu_forward(a.act.data(), a.pre.data(), a.h.data(), a.hbias.data(), s.M, s.F);
    for (std::ptrdiff_t i = 0; i < s.M * s.F; ++i) r.pre[i] = r.h[i] + r.hbias[i % s.F];
    ops::gelu_forward(r.act.data(), r.pre.data(), s.M * s.F);
    require_close("bias_gelu_forward", s.name, relative_l2(a.act, r.act), 0.0);
    std::vector<float> sum_a(s.M * s.D), sum_r(s.M * s.D);
    ops::residual_layernorm_forward(sum_a.data(), a.y.data(), a.mean.data(), a.rstd.data(), a.x.data(), a.res.data(), a.w.data(),
                                    a.b.data(), s.M, s.D, eps);
    for (std::ptrdiff_t i = 0; i < s.M * s.D; ++i) sum_r[i] = r.x[i] + r.res[i];
    ops::layernorm_forward(r.y.data(), r.mean.data(), r.rstd.data(), sum_r.data(), r.w.data(), r.b.data(), s.M, s.D, eps);
    require_close("residual_layernorm_forward", s.name, relative_l2(a.y, r.y), 0.0);
}

/// The encoder's token assembly as vit_encoder.hpp writes it today (the baseline of mask_blend_pos).
void mask_blend_pos_unfused(float* x0, const float* e, const float* mask, const float* mt, const float* cls, const float* pos, int B,
                            int L, int D) {
    const int N = L + 1;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; ++b) {
        float* row = x0 + static_cast<std::ptrdiff_t>(b) * N * D;
        for (int d = 0; d < D; ++d) row[d] = cls[d] + pos[d];
        for (int l = 0; l < L; ++l) {
            const float w = mask[static_cast<std::ptrdiff_t>(b) * L + l];
            const float* el = e + (static_cast<std::ptrdiff_t>(b) * L + l) * D;
            float* r = row + static_cast<std::ptrdiff_t>(1 + l) * D;
            const float* pe = pos + static_cast<std::ptrdiff_t>(1 + l) * D;
            for (int d = 0; d < D; ++d) r[d] = el[d] * (1.0f - w) + mt[d] * w + pe[d];
        }
    }
}

/// Token assembly buffers: B = M / N samples of N = L + 1 tokens.
struct BlendBuffers {
    BlendBuffers(const RowShape& s, int N)
        : B(static_cast<int>(s.M / N)), L(N - 1), D(static_cast<int>(s.D)), e(normal(static_cast<std::size_t>(B) * L * D, 9)),
          mask(static_cast<std::size_t>(B) * L), mt(normal(D, 10)), cls(normal(D, 11)), pos(normal(static_cast<std::size_t>(N) * D, 12)),
          x0(static_cast<std::size_t>(B) * N * D) {
        simmim::Rng rng(13);
        for (auto& m : mask) m = rng.uniform() < 0.6 ? 1.0f : 0.0f;
    }
    int B, L, D;
    std::vector<float> e, mask, mt, cls, pos, x0;
};
int tokens_of(const RowShape& s) { return s.D == 192 ? 65 : 197; }

/// Inputs of the masked L1 loss.
struct ImageBuffers {
    explicit ImageBuffers(const ImageShape& s)
        : pred(normal(s.pixels(), 14)), target(normal(s.pixels(), 15)), mask(s.tokens()), dpred(s.pixels(), 0.0f) {
        simmim::Rng rng(16);
        for (auto& m : mask) m = rng.uniform() < 0.6 ? 1.0f : 0.0f;
    }
    std::vector<float> pred, target, mask, dpred;
};

void validate_images(const ImageShape& s) {
    ImageBuffers a(s), r(s);
    const float la = ops::masked_l1_forward(a.pred.data(), a.target.data(), a.mask.data(), s.B, s.C, s.S, s.p);
    const float lr = ops::masked_l1_forward_reference(r.pred.data(), r.target.data(), r.mask.data(), s.B, s.C, s.S, s.p);
    require_close("masked_l1_forward", s.name, std::fabs(double(la) - lr) / std::fabs(double(lr)));
    ops::masked_l1_backward(a.dpred.data(), static_cast<float*>(nullptr), 1.0f, a.pred.data(), a.target.data(), a.mask.data(), s.B,
                            s.C, s.S, s.p);
    ops::masked_l1_backward_reference(r.dpred.data(), static_cast<float*>(nullptr), 1.0f, r.pred.data(), r.target.data(), r.mask.data(),
                                      s.B, s.C, s.S, s.p);
    require_close("masked_l1_backward", s.name, relative_l2(a.dpred, r.dpred));
}

/// One timed loop: `elements` items and `bytes` of minimal traffic per call.
template <class F>
void timed(benchmark::State& state, double elements, double bytes, F&& call) {
    for (auto _ : state) {
        call();
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * elements));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}

void register_rows(const RowShape& s) {
    const double MD = double(s.M) * s.D, MF = double(s.M) * s.F, f = sizeof(float);
    auto add = [&](const std::string& name, auto&& body) {
        benchmark::RegisterBenchmark((name + "/" + s.name).c_str(), body)->UseRealTime()->Unit(benchmark::kMicrosecond);
    };
    for (const bool simd : {true, false}) {
        const std::string path = simd ? "/simd" : "/reference";
        add("gelu_forward" + path, [=](benchmark::State& st) {
            RowBuffers m(s);
            timed(st, MF, 2 * MF * f, [&] {
                if (simd)
                    ops::gelu_forward(m.act.data(), m.h.data(), s.M * s.F);
                else
                    ops::gelu_forward_reference(m.act.data(), m.h.data(), s.M * s.F);
            });
        });
        add("gelu_backward" + path, [=](benchmark::State& st) {
            RowBuffers m(s);
            timed(st, MF, 4 * MF * f, [&] {
                if (simd)
                    ops::gelu_backward(m.dpre.data(), m.dh.data(), m.h.data(), s.M * s.F);
                else
                    ops::gelu_backward_reference(m.dpre.data(), m.dh.data(), m.h.data(), s.M * s.F);
            });
        });
        add("layernorm_forward" + path, [=](benchmark::State& st) {
            RowBuffers m(s);
            timed(st, MD, 2 * MD * f, [&] {
                if (simd)
                    ops::layernorm_forward(m.y.data(), m.mean.data(), m.rstd.data(), m.x.data(), m.w.data(), m.b.data(), s.M, s.D, 1e-6f);
                else
                    ops::layernorm_forward_reference(m.y.data(), m.mean.data(), m.rstd.data(), m.x.data(), m.w.data(), m.b.data(), s.M, s.D,
                                                     1e-6f);
            });
        });
        add("layernorm_backward" + path, [=](benchmark::State& st) {
            RowBuffers m(s);
            timed(st, MD, (4 * MD + 4.0 * kLayerNormChunks * s.D) * f, [&] {
                if (simd)
                    ops::layernorm_backward(m.dx.data(), m.dw.data(), m.db.data(), m.dy.data(), m.x.data(), m.mean.data(), m.rstd.data(),
                                            m.w.data(), s.M, s.D);
                else
                    ops::layernorm_backward_reference(m.dx.data(), m.dw.data(), m.db.data(), m.dy.data(), m.x.data(), m.mean.data(),
                                                      m.rstd.data(), m.w.data(), s.M, s.D);
            });
        });
    }
    // fusions (both sides on the dispatching, SIMD-when-enabled ops)
    add("bias_gelu/fused", [=](benchmark::State& st) {
        RowBuffers m(s);
        timed(st, MF, 3 * MF * f, [&] { ops::bias_gelu_forward(m.act.data(), m.pre.data(), m.h.data(), m.hbias.data(), s.M, s.F); });
    });
    add("bias_gelu/unfused", [=](benchmark::State& st) {
        RowBuffers m(s);
        timed(st, MF, 3 * MF * f, [&] {
            float* pre = m.pre.data();
            const float* h = m.h.data();
            const float* bias = m.hbias.data();
            const std::ptrdiff_t M = s.M, F = s.F;
#pragma omp parallel for schedule(static)
            for (std::ptrdiff_t r = 0; r < M; ++r)
                for (std::ptrdiff_t i = 0; i < F; ++i) pre[r * F + i] = h[r * F + i] + bias[i];
            ops::gelu_forward(m.act.data(), m.pre.data(), s.M * s.F);
        });
    });
    add("residual_layernorm/fused", [=](benchmark::State& st) {
        RowBuffers m(s);
        std::vector<float> sum(s.M * s.D);
        timed(st, MD, 4 * MD * f, [&] {
            ops::residual_layernorm_forward(sum.data(), m.y.data(), m.mean.data(), m.rstd.data(), m.x.data(), m.res.data(), m.w.data(),
                                            m.b.data(), s.M, s.D, 1e-6f);
        });
    });
    add("residual_layernorm/unfused", [=](benchmark::State& st) {
        RowBuffers m(s);
        std::vector<float> sum(s.M * s.D);
        timed(st, MD, 4 * MD * f, [&] {
            float* out = sum.data();
            const float* x = m.x.data();
            const float* res = m.res.data();
            const std::ptrdiff_t n = s.M * s.D;
#pragma omp parallel for schedule(static)
            for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = x[i] + res[i];
            ops::layernorm_forward(m.y.data(), m.mean.data(), m.rstd.data(), sum.data(), m.w.data(), m.b.data(), s.M, s.D, 1e-6f);
        });
    });
    add("mask_blend_pos/fused", [=](benchmark::State& st) {
        BlendBuffers m(s, tokens_of(s));
        timed(st, MD, 2 * MD * f, [&] {
            ops::mask_blend_pos_forward(m.x0.data(), m.e.data(), m.mask.data(), m.mt.data(), m.cls.data(), m.pos.data(), m.B, m.L, m.D);
        });
    });
    add("mask_blend_pos/unfused", [=](benchmark::State& st) {
        BlendBuffers m(s, tokens_of(s));
        timed(st, MD, 2 * MD * f, [&] {
            mask_blend_pos_unfused(m.x0.data(), m.e.data(), m.mask.data(), m.mt.data(), m.cls.data(), m.pos.data(), m.B, m.L, m.D);
        });
    });
}

void validate_blend(const RowShape& s) {
    BlendBuffers a(s, tokens_of(s)), r(s, tokens_of(s));
    ops::mask_blend_pos_forward(a.x0.data(), a.e.data(), a.mask.data(), a.mt.data(), a.cls.data(), a.pos.data(), a.B, a.L, a.D);
    mask_blend_pos_unfused(r.x0.data(), r.e.data(), r.mask.data(), r.mt.data(), r.cls.data(), r.pos.data(), r.B, r.L, r.D);
    require_close("mask_blend_pos_forward", s.name, relative_l2(a.x0, r.x0), 1e-6);
}

void register_images(const ImageShape& s) {
    const double n = double(s.pixels()), f = sizeof(float);
    for (const bool simd : {true, false}) {
        const std::string path = simd ? "/simd/" : "/reference/";
        benchmark::RegisterBenchmark(("masked_l1_forward" + path + s.name).c_str(),
                                     [=](benchmark::State& st) {
                                         ImageBuffers m(s);
                                         float loss = 0;
                                         timed(st, n, 2 * n * f, [&] {
                                             loss = simd ? ops::masked_l1_forward(m.pred.data(), m.target.data(), m.mask.data(), s.B, s.C,
                                                                                  s.S, s.p)
                                                         : ops::masked_l1_forward_reference(m.pred.data(), m.target.data(),
                                                                                            m.mask.data(), s.B, s.C, s.S, s.p);
                                             benchmark::DoNotOptimize(loss);
                                         });
                                     })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark(("masked_l1_backward" + path + s.name).c_str(),
                                     [=](benchmark::State& st) {
                                         ImageBuffers m(s);
                                         timed(st, n, 4 * n * f, [&] {
                                             if (simd)
                                                 ops::masked_l1_backward(m.dpred.data(), static_cast<float*>(nullptr), 1.0f,
                                                                         m.pred.data(), m.target.data(), m.mask.data(), s.B, s.C, s.S,
                                                                         s.p);
                                             else
                                                 ops::masked_l1_backward_reference(m.dpred.data(), static_cast<float*>(nullptr), 1.0f,
                                                                                   m.pred.data(), m.target.data(), m.mask.data(), s.B,
                                                                                   s.C, s.S, s.p);
                                         });
                                     })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    std::printf("simd path: %s (float: %s)\n", simmim::kernels::isa_name(), simmim::kernels::simd_enabled<float> ? "on" : "off");
    for (const auto& s : kRowShapes) {
        validate_rows(s);
        validate_blend(s);
    }
    validate_images(kImageShape);
    for (const auto& s : kRowShapes) register_rows(s);
    register_images(kImageShape);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
