// benchmarks/bench_attention.cpp: fused (online-softmax) vs naive multi-head attention core, float,
// forward and forward+backward, on the ViT shapes the presets use. The PyTorch peer is
// benchmarks/peer_attention.py; results and commands are in docs/attention.md.
//
// FLOP convention (shared with the peer): forward = 4*B*H*N^2*Dh (two N x N x Dh matmuls);
// forward+backward = 3.5 x forward (backward counted as the standard 2.5 x forward, i.e. without
// the fused kernel's recomputation of Q K^T). items/s counts samples (B) per second.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/ops/attention.hpp"
#include "simmim/ops/attention_fused.hpp"

namespace {

struct Shape {
    int B, H, N, Dh;
    std::size_t qkv() const { return static_cast<std::size_t>(B) * N * 3 * H * Dh; }
    std::size_t out() const { return static_cast<std::size_t>(B) * N * H * Dh; }
    std::size_t lse() const { return static_cast<std::size_t>(B) * H * N; }
    std::size_t probs() const { return static_cast<std::size_t>(B) * H * N * N; }
    double forward_flops() const { return 4.0 * B * H * static_cast<double>(N) * N * Dh; }
    std::string name() const {
        char buf[64];
        std::snprintf(buf, sizeof buf, "B%d_H%d_N%d_Dh%d", B, H, N, Dh);
        return buf;
    }
};

// (8,12,197,64) ViT-B/16 at 224 px, (64,3,65,64) ViT-Tiny-like at 128 px, (1,12,1024,64) a long
// sequence, (256,4,36,32) many small images.
const Shape kShapes[] = {{8, 12, 197, 64}, {64, 3, 65, 64}, {1, 12, 1024, 64}, {256, 4, 36, 32}};

/// Inputs and outputs of one shape; q, k, v ~ N(0, 1), dout ~ N(0, 1). Only the naive kernels
/// get a probability buffer.
struct Buffers {
    Buffers(const Shape& s, bool fused)
        : qkv(s.qkv()), dout(s.out()), out(s.out()), lse(fused ? s.lse() : 0), dqkv(s.qkv(), 0.0f),
          probs(fused ? 0 : s.probs()) {
        simmim::Rng rng(simmim::derive_seed(2024, static_cast<std::uint64_t>(s.N), static_cast<std::uint64_t>(s.B)));
        for (auto& x : qkv) x = static_cast<float>(rng.normal());
        for (auto& x : dout) x = static_cast<float>(rng.normal());
    }
    std::vector<float> qkv;   // (B, N, 3, H, Dh)
    std::vector<float> dout;  // (B, N, H, Dh)
    std::vector<float> out;   // (B, N, H, Dh)
    std::vector<float> lse;   // (B, H, N)       fused only
    std::vector<float> dqkv;  // (B, N, 3, H, Dh) accumulated across iterations (finite: grows linearly)
    std::vector<float> probs; // (B, H, N, N)    naive only
};

void run_fused(Buffers& m, const Shape& s, bool backward) {
    simmim::ops::attention_forward_fused(m.out.data(), m.lse.data(), m.qkv.data(), s.B, s.N, s.H, s.Dh);
    if (backward)
        simmim::ops::attention_backward_fused(m.dqkv.data(), m.dout.data(), m.qkv.data(), m.out.data(), m.lse.data(), s.B,
                                              s.N, s.H, s.Dh);
}

void run_naive(Buffers& m, const Shape& s, bool backward) {
    simmim::ops::attention_forward(m.out.data(), m.probs.data(), m.qkv.data(), s.B, s.N, s.H, s.Dh);
    if (backward)
        simmim::ops::attention_backward(m.dqkv.data(), m.dout.data(), m.qkv.data(), m.probs.data(), s.B, s.N, s.H, s.Dh);
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        den += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(num / den);
}

/// Fused vs naive on one shape: out and dqkv within float round-off, or the process exits.
void validate(const Shape& s) {
    Buffers fused(s, true), naive(s, false);
    run_fused(fused, s, true);
    run_naive(naive, s, true);
    const double out_err = relative_l2(fused.out, naive.out), grad_err = relative_l2(fused.dqkv, naive.dqkv);
    if (!(out_err <= 1e-5 && grad_err <= 1e-5)) {
        std::fprintf(stderr,
                     "bench_attention: fused disagrees with naive on %s: rel. L2 error out %.3g, dqkv %.3g "
                     "(limit 1e-5)\n",
                     s.name().c_str(), out_err, grad_err);
        std::exit(1);
    }
    std::printf("validated %s: rel. L2 error out %.2g, dqkv %.2g\n", s.name().c_str(), out_err, grad_err);
}

void bench(benchmark::State& state, Shape s, bool fused, bool backward) {
    Buffers m(s, fused);
    for (auto _ : state) {
        if (fused)
            run_fused(m, s, backward);
        else
            run_naive(m, s, backward);
        benchmark::DoNotOptimize(m.out.data());
        benchmark::DoNotOptimize(m.dqkv.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * s.B);
    const double flops = s.forward_flops() * (backward ? 3.5 : 1.0);
    state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    std::printf("simd path: %s\n", simmim::ops::fused_attention_detail::kUsesSimd ? "xsimd" : "scalar");
    for (const auto& s : kShapes) validate(s);
    for (const auto& s : kShapes)
        for (const bool backward : {false, true})
            for (const bool fused : {true, false}) {
                std::string name = "attention/";
                name += backward ? "fwdbwd/" : "fwd/";
                name += fused ? "fused/" : "naive/";
                name += s.name();
                benchmark::RegisterBenchmark(name.c_str(), bench, s, fused, backward)
                    ->UseRealTime()
                    ->Unit(benchmark::kMillisecond);
            }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
