// benchmarks/bench_gemm.cpp: simmim::kernels::gemm<float> against Eigen (Map + noalias) on the
// products of a ViT training step, with the machine's FMA peak measured by the same binary.
//
// Shapes (row-major): for every Linear(K -> N) on M tokens
//   fwd  Y(M,N)   = X(M,K) W(N,K)^T        gemm(false, true,  M, N, K, 1, X, K, W, K, 0, Y, N)
//   dX   dX(M,K) += dY(M,N) W(N,K)         gemm(false, false, M, K, N, 1, dY, N, W, K, 1, dX, K)
//   dW   dW(N,K) += dY(M,N)^T X(M,K)       gemm(true,  false, N, K, M, 1, dY, N, X, K, 1, dW, K)
// for ViT-S/16 at batch 8 (M = 8 * 197 = 1576, D = 384) and vit-t4-32 at batch 64 (M = 64 * 65 =
// 4160, D = 192), layers qkv (D -> 3D), proj (D -> D), fc1 (D -> 4D), fc2 (4D -> D); plus the
// per-head attention products S = Q K^T (N_tok x Dh)(Dh x N_tok) and O = P V (N_tok x N_tok)(N_tok x Dh).
// Each benchmark runs at 1 and 2 OpenMP threads (Eigen::setNbThreads follows): 1-thread runs are
// timed by the thread's CPU clock, 2-thread runs by the wall clock. Counters: FLOPS (2 M N K per
// call) and peak_frac = FLOPS / (measured single-core FMA peak x threads), a fraction that Google
// Benchmark prints with a "/s" suffix because it is computed as a rate.
// Before timing, every shape is validated: ours vs Eigen within float round-off, or exit(1).
// With AVX512-BF16, "<product>/ours_bf16" runs the same product in bf16 matmul precision (not validated
// against Eigen: tests/test_bf16.cpp checks it against an FP64 product of the rounded operands).
// Run with --benchmark_repetitions=5 --benchmark_report_aggregates_only=true on a busy machine.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include <Eigen/Core>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <xsimd/xsimd.hpp>

#include "simmim/core/random.hpp"
#include "simmim/kernels/gemm.hpp"

namespace {

using Index = std::ptrdiff_t;

/// One gemm call: sizes, transposes and beta; leading dimensions are the row widths.
struct Product {
    std::string name;
    bool trans_a, trans_b;
    Index M, N, K;
    float beta;
    Index a_size() const { return M * K; }
    Index b_size() const { return K * N; }
    Index lda() const { return trans_a ? M : K; }
    Index ldb() const { return trans_b ? K : N; }
    double flops() const { return 2.0 * M * N * K; }
};

std::vector<Product> make_products() {
    std::vector<Product> products;
    struct Model {
        const char* name;
        Index tokens, width;
    };
    for (const Model& model : {Model{"vits16_b8", 1576, 384}, Model{"vitt4_b64", 4160, 192}}) {
        const Index D = model.width, M = model.tokens;
        struct Layer {
            const char* name;
            Index in, out;
        };
        for (const Layer& layer :
             {Layer{"qkv", D, 3 * D}, Layer{"proj", D, D}, Layer{"fc1", D, 4 * D}, Layer{"fc2", 4 * D, D}}) {
            const std::string base = std::string(model.name) + "/" + layer.name;
            products.push_back({base + "/fwd", false, true, M, layer.out, layer.in, 0.0f});
            products.push_back({base + "/dX", false, false, M, layer.in, layer.out, 1.0f});
            products.push_back({base + "/dW", true, false, layer.out, layer.in, M, 1.0f});
        }
    }
    for (const Index tokens : {65, 197, 1024}) {
        const std::string base = "attn_N" + std::to_string(tokens) + "_Dh64";
        products.push_back({base + "/QKt", false, true, tokens, tokens, 64, 0.0f});
        products.push_back({base + "/PV", false, false, tokens, 64, tokens, 0.0f});
    }
    return products;
}

struct Buffers {
    std::vector<float> a, b, c;
    explicit Buffers(const Product& p) : a(p.a_size()), b(p.b_size()), c(p.M * p.N) {
        simmim::Rng rng(simmim::derive_seed(7, static_cast<std::uint64_t>(p.M), static_cast<std::uint64_t>(p.N),
                                            static_cast<std::uint64_t>(p.K)));
        for (auto* v : {&a, &b, &c})
            for (auto& x : *v) x = static_cast<float>(rng.uniform(-1.0, 1.0));
    }
};

void run_ours(const Product& p, Buffers& m) {
    simmim::kernels::gemm<float>(p.trans_a, p.trans_b, p.M, p.N, p.K, 1.0f, m.a.data(), p.lda(), m.b.data(), p.ldb(),
                                 p.beta, m.c.data(), p.N);
}

void run_eigen(const Product& p, Buffers& m) {
    using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<Matrix> c(m.c.data(), p.M, p.N);
    const Eigen::Map<const Matrix> a(m.a.data(), p.trans_a ? p.K : p.M, p.lda());
    const Eigen::Map<const Matrix> b(m.b.data(), p.trans_b ? p.N : p.K, p.ldb());
    if (p.trans_a)
        c.noalias() += a.transpose() * b;  // dW: beta = 1
    else if (p.trans_b)
        c.noalias() = a * b.transpose();  // fwd, QKt: beta = 0
    else if (p.beta == 0.0f)
        c.noalias() = a * b;  // PV
    else
        c.noalias() += a * b;  // dX
}

/// Ours vs Eigen on one product, from the same C: max |diff| relative to max |C| (float round-off).
bool validate(const Product& p) {
    Buffers ours(p), eigen(p);
    run_ours(p, ours);
    run_eigen(p, eigen);
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < ours.c.size(); ++i) {
        diff = std::max(diff, std::fabs(static_cast<double>(ours.c[i]) - eigen.c[i]));
        scale = std::max(scale, std::fabs(static_cast<double>(eigen.c[i])));
    }
    const double tolerance = 1e-5 * std::sqrt(static_cast<double>(p.K));
    if (!(diff <= tolerance * scale)) {
        std::fprintf(stderr, "bench_gemm: %s: ours and Eigen differ by %g (max |C| %g)\n", p.name.c_str(), diff, scale);
        return false;
    }
    return true;
}

void set_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    Eigen::setNbThreads(threads);
}

#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
struct PeakVector {  // no SIMD ISA enabled: scalar FMA
    float value;
    static constexpr int lanes = 1;
    static PeakVector splat(float x) { return {x}; }
    static PeakVector fma(PeakVector a, PeakVector b, PeakVector c) { return {std::fma(a.value, b.value, c.value)}; }
    float sum() const { return value; }
};
#else
struct PeakVector {  // the widest xsimd batch the compiler targets
    xsimd::batch<float> value;
    static constexpr int lanes = static_cast<int>(xsimd::batch<float>::size);
    static PeakVector splat(float x) { return {xsimd::batch<float>(x)}; }
    static PeakVector fma(PeakVector a, PeakVector b, PeakVector c) { return {xsimd::fma(a.value, b.value, c.value)}; }
    float sum() const { return xsimd::hadd(value); }
};
#endif

/// CPU time consumed by the calling thread, in seconds (POSIX): unlike the wall clock it does not
/// count the time other processes on a busy machine hold the core.
double thread_cpu_seconds() {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

/// FMA peak in GFLOP/s summed over `threads` threads, each timed by its own CPU clock: 24
/// independent FMA chains per thread (more than latency x throughput), 2 flops per lane per FMA.
double measure_peak_gflops(int threads, double seconds) {
    set_threads(threads);
    double total = 0;
#pragma omp parallel reduction(+ : total)
    {
        PeakVector acc[24];
        for (auto& a : acc) a = PeakVector::splat(0.0f);
        const PeakVector x = PeakVector::splat(1.0000001f), y = PeakVector::splat(1e-7f);
        long rounds = 0;
        const double start = thread_cpu_seconds();
        double elapsed = 0;
        do {
            for (int repeat = 0; repeat < 10000; ++repeat) {
#pragma GCC unroll 24
                for (auto& a : acc) a = PeakVector::fma(a, x, y);
            }
            rounds += 10000;
            elapsed = thread_cpu_seconds() - start;
        } while (elapsed < seconds);
        float sink = 0;
        for (const auto& a : acc) sink += a.sum();
        benchmark::DoNotOptimize(sink);
        total += rounds * 24.0 * 2.0 * PeakVector::lanes / elapsed / 1e9;
    }
    return total;
}

double g_peak_gflops_one_core = 0;  // measured in main before the benchmarks

void BM_peak(benchmark::State& state) {
    const int threads = static_cast<int>(state.range(0));
    double gflops = 0;
    for (auto _ : state) gflops = measure_peak_gflops(threads, 0.05);
    state.counters["GFLOPS"] = gflops;
}

void BM_gemm(benchmark::State& state, const Product& p, bool ours, bool bf16) {
    const int threads = static_cast<int>(state.range(0));
    set_threads(threads);
    const simmim::kernels::ScopedMatmulPrecision precision(bf16 ? simmim::kernels::MatmulPrecision::bf16
                                                                : simmim::kernels::MatmulPrecision::fp32);
    Buffers m(p);
    for (auto _ : state) {
        if (ours)
            run_ours(p, m);
        else
            run_eigen(p, m);
        benchmark::ClobberMemory();
    }
    state.counters["FLOPS"] = benchmark::Counter(p.flops(), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_frac"] = benchmark::Counter(p.flops() / (g_peak_gflops_one_core * 1e9 * threads),
                                                     benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
#ifdef _OPENMP
    const int max_threads = omp_get_max_threads();
#else
    const int max_threads = 1;
#endif
    const std::vector<Product> products = make_products();
    const bool bf16 = simmim::kernels::cpu_supports_bf16();  // then also "<product>/ours_bf16"
    for (const Product& p : products)
        if (!validate(p)) return 1;
    g_peak_gflops_one_core = measure_peak_gflops(1, 0.5);
    std::printf("gemm float path: %s; single-core FMA peak %.1f GFLOP/s (2-core %.1f)\n",
                simmim::kernels::kernel_path().c_str(), g_peak_gflops_one_core, measure_peak_gflops(2, 0.5));
    benchmark::RegisterBenchmark("peak", BM_peak)->Arg(1)->Arg(std::max(1, std::min(2, max_threads)))->Iterations(5);
    // Back to back per product: ours and Eigen on 1 thread (timed by the thread's CPU clock, which a
    // busy machine disturbs least), then on 2 threads (wall clock, the only honest clock there).
    for (const Product& p : products)
        for (const int threads : {1, 2}) {
            if (threads > max_threads) continue;
            for (const bool ours : {true, false}) {
                const std::string name = p.name + (ours ? "/ours" : "/eigen");
                auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_gemm, p, ours, false);
                b->Arg(threads)->Unit(benchmark::kMillisecond);
                if (threads > 1) b->UseRealTime();
            }
            if (bf16) {  // the bf16 kernel (peak_frac stays against the FP32 peak: 2.0 would be the bf16 peak)
                auto* b = benchmark::RegisterBenchmark((p.name + "/ours_bf16").c_str(), BM_gemm, p, true, true);
                b->Arg(threads)->Unit(benchmark::kMillisecond);
                if (threads > 1) b->UseRealTime();
            }
        }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    set_threads(max_threads);
    return 0;
}
