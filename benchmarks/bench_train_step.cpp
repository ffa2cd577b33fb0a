// benchmarks/bench_train_step.cpp: one whole SimMIM training step of simmim::ViTSimMIM<float, preset>
// (zero_grad, forward, backward, clip_grad_norm 5.0, AdamW step with the two parameter groups) on
// vit-t4-32 (batch 64), vit-t16-224 (batch 16), vit-s16-224 (batch 8), vit-b16-224 (batch 8), swin-d32
// (batch 64) and swin-b-192 (batch 4), random N(0, 1) ("normalised") images and official masks
// (RandomMaskPatch, the preset's mask patch and ratio), in two matmul precisions (the last part of a
// run's name): fp32, and bf16 (kernels::set_matmul_precision: bf16 operands, FP32 accumulation, as
// torch.autocast("cpu", dtype=torch.bfloat16)); bf16 runs are registered only when the CPU has
// AVX512-BF16, and say so on stdout otherwise.
// The PyTorch peer is benchmarks/peer_train_step.py; compare.sh runs both, docs/performance.md has
// the results.
//
// Validation before timing (per preset, once per process): three steps on one fixed batch; every loss
// must be finite and the last must be below the first, else the process exits with a message.
//
// Counters (wall clock, UseRealTime, medians over repetitions):
//   items_per_second  images per second (SetItemsProcessed)
//   GFLOP/s           analytic forward+backward FLOPs per step / time (train_step_flops below)
//   peak_frac         GFLOP/s / the FP32 FMA peak of all OpenMP threads, measured by this binary
//                     (it is printed as a rate, "/s", because Google Benchmark computes it as one)
//   peak_GFLOP/s      that measured peak (GFLOP/s over all threads, not a rate of this benchmark)
//   bf16_peak_GFLOP/s the bf16 peak measured the same way with VDPBF16PS (4 flops per lane), bf16 runs only
//   activations_MB    SimMIM::activation_bytes(batch): the activations a step allocates (the rest of
//                     peak_rss_MB is parameters, gradients, AdamW moments and the process itself)
//   peak_rss_MB       getrusage ru_maxrss of the whole process at the end of the benchmark: run one
//                     preset per process (--benchmark_filter=vit-s16-224) for a per-preset figure.
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/core/config.hpp"
#include "simmim/core/random.hpp"
#include "simmim/core/swin_config.hpp"
#include "simmim/kernels/gemm_bf16.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/model/swin_encoder.hpp"
#include "simmim/optim/adamw.hpp"

namespace {

constexpr double kClipNorm = 5.0;
constexpr double kLearningRate = 5e-4;
/// swin-b-192 (24 blocks) at batch 4 and vit-b16-224 at batch 8 do not descend in 3 steps at 5e-4 without warmup,
/// in PyTorch either: they take 1e-4, the official 800-epoch base rate (the peer uses the same, peer_train_step.py).
double learning_rate(const char* name) {
    const std::string n = name;
    return n == "swin-b-192" || n == "vit-b16-224" ? 1e-4 : kLearningRate;
}
constexpr int kValidationSteps = 3;

/// Analytic FLOPs of one forward+backward pass, element-wise work ignored:
///   linear layer on M rows, K -> N:   6 M K N  (fwd 2 MKN, dX 2 MKN, dW 2 MKN)
///     per block, M = B N_tok rows: qkv D -> 3D, proj D -> D, fc1 D -> 4D, fc2 4D -> D
///     head (1x1 conv D -> p p C) on M = B L rows
///   patch embedding (conv p x p, stride p) on M = B L rows, K = C p p -> D:  4 M K N
///     (no input gradient: the images do not require one, neither here nor in the peer)
///   attention per block: forward Q K^T and P V = 2 * 2 B H N_tok^2 Dh, backward twice that (no
///     recomputation counted), so 3 * 4 B N_tok^2 D in all.
template <simmim::ViTConfig C>
double train_step_flops(int batch) {
    const double B = batch, L = C.num_patches(), N = C.num_tokens(), D = C.embed_dim;
    const double hidden = C.mlp_hidden(), patch_dim = C.patch_dim();
    const double per_block_linear = 6.0 * B * N * (D * 3 * D + D * D + D * hidden + hidden * D);
    const double per_block_attention = 3.0 * 4.0 * B * N * N * D;
    const double patch_embed = 4.0 * B * L * patch_dim * D;
    const double head = 6.0 * B * L * D * patch_dim;
    return C.depth * (per_block_linear + per_block_attention) + patch_embed + head;
}

/// The same count for a Swin encoder: per stage i on M = B r_i^2 rows of C_i channels, the block linears
/// 6 M 12 C_i^2 and the window attention 12 M w_i^2 C_i (QK^T and PV over w_i^2 keys, fwd + bwd); the patch
/// merging 6 (M / 4) 4C_i 2C_i; patch embedding 4 B g^2 (C p^2) C_0; head 6 B o^2 C_last (stride^2 C).
template <simmim::SwinConfig C>
double train_step_flops(int batch) {
    const double B = batch;
    double flops = 4.0 * B * C.grid() * C.grid() * (C.in_chans * C.patch_size * C.patch_size) * C.embed_dim;
    for (int i = 0; i < C.num_stages; ++i) {
        const double M = B * C.resolution(i) * C.resolution(i), D = C.dim(i), w2 = double(C.window(i)) * C.window(i);
        flops += C.depth(i) * (6.0 * M * 12.0 * D * D + 12.0 * M * w2 * D);
        if (i + 1 < C.num_stages) flops += 6.0 * (M / 4) * (4 * D) * (2 * D);
    }
    const double o = C.image_size / C.stride();
    return flops + 6.0 * B * o * o * C.num_features() * (double(C.stride()) * C.stride() * C.in_chans);
}

/// The core SimMIM model of a preset configuration (ViT or Swin) and its default masking.
template <auto C>
struct PresetModel;
template <simmim::ViTConfig C>
struct PresetModel<C> {
    using type = simmim::ViTSimMIM<float, C>;
    static simmim::RandomMaskPatch masking() { return simmim::random_mask_patch<C, simmim::presets::mask_of<C>()>(); }
};
template <simmim::SwinConfig C>
struct PresetModel<C> {
    using type = simmim::SwinSimMIM<float, C>;
    static simmim::RandomMaskPatch masking() {
        for (const auto& p : simmim::presets::swin_all)
            if (p.config == C) {
                const auto g = type::geometry;
                return simmim::RandomMaskPatch(g.image_size, p.mask.patch_size, g.mask_cell(), p.mask.ratio);
            }
        throw std::logic_error("bench_train_step: not a Swin preset");
    }
};

/// CPU time consumed by the calling thread, in seconds: unaffected by other processes on the core.
double thread_cpu_seconds() {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

/// FP32 FMA peak in GFLOP/s summed over all OpenMP threads (bench_gemm's method): each thread runs
/// 24 independent FMA chains (more than FMA latency x throughput) for `seconds` of its own CPU time,
/// 2 flops per lane per FMA; with AVX-512, _mm512_fmadd_ps on 16 lanes.
double measure_peak_gflops(double seconds) {
    double total = 0;
#pragma omp parallel reduction(+ : total)
    {
        constexpr int kChains = 24;
#ifdef __AVX512F__
        constexpr int lanes = 16;
        __m512 acc[kChains];
        for (auto& a : acc) a = _mm512_setzero_ps();
        const __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(1e-7f);
#else
        constexpr int lanes = 1;  // no AVX-512: scalar FMA, so the fraction is against a scalar peak
        float acc[kChains] = {};
        const float x = 1.0000001f, y = 1e-7f;
#endif
        long rounds = 0;
        const double start = thread_cpu_seconds();
        double elapsed = 0;
        do {
            for (int repeat = 0; repeat < 10000; ++repeat) {
#pragma GCC unroll 24
                for (int c = 0; c < kChains; ++c) {
#ifdef __AVX512F__
                    acc[c] = _mm512_fmadd_ps(acc[c], x, y);
#else
                    acc[c] = std::fma(acc[c], x, y);
#endif
                }
            }
            rounds += 10000;
            elapsed = thread_cpu_seconds() - start;
        } while (elapsed < seconds);
        float sink = 0;
        for (const auto& a : acc) {
#ifdef __AVX512F__
            sink += _mm512_reduce_add_ps(a);
#else
            sink += a;
#endif
        }
        benchmark::DoNotOptimize(sink);
        total += static_cast<double>(rounds) * kChains * 2.0 * lanes / elapsed / 1e9;
    }
    return total;
}

#if defined(SIMMIM_BF16_KERNEL)
[[gnu::noinline]] SIMMIM_BF16_TARGET float bf16_peak_chains(double seconds, double& gflops) {
    constexpr int kChains = 24;
    __m512 acc[kChains];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const double start = thread_cpu_seconds();
    double elapsed = 0;
    long long rounds = 0;
    do {
        for (int r = 0; r < 10000; ++r)
#pragma GCC unroll 24
            for (auto& a : acc) a = _mm512_dpbf16_ps(a, x, x);
        rounds += 10000;
        elapsed = thread_cpu_seconds() - start;
    } while (elapsed < seconds);
    float sink = 0;
    for (const auto& a : acc) sink += _mm512_reduce_add_ps(a);
    gflops = static_cast<double>(rounds) * kChains * 4.0 * 16 / elapsed / 1e9;
    return sink;
}
#endif

/// The bf16 (VDPBF16PS) peak in GFLOP/s over all OpenMP threads, measured like the FP32 one; 0 without
/// AVX512-BF16.
double measure_bf16_peak_gflops(double seconds) {
    double total = 0;
#if defined(SIMMIM_BF16_KERNEL)
    if (!simmim::kernels::cpu_supports_bf16()) return 0;
#pragma omp parallel reduction(+ : total)
    {
        double gflops = 0;
        benchmark::DoNotOptimize(bf16_peak_chains(seconds, gflops));
        total += gflops;
    }
#else
    (void)seconds;
#endif
    return total;
}

double g_peak_gflops = 0;       // all threads, measured in main before the benchmarks
double g_bf16_peak_gflops = 0;  // the same for bf16 (0: no AVX512-BF16)

double peak_rss_megabytes() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

/// A model, its optimiser and one fixed batch: images (B, C, S, S) ~ N(0, 1), masks (B, h, w).
template <auto C>
struct TrainingSetup {
    using Model = typename PresetModel<C>::type;
    TrainingSetup(int batch_size, double learning_rate)
        : batch(batch_size), lr(learning_rate), model(std::make_unique<Model>(PresetModel<C>::masking(), 1)),
          optimizer(model->params(), {0.9, 0.999, 1e-8, 0.05}),
          images(static_cast<std::size_t>(batch) * Model::image_numel),
          mask(static_cast<std::size_t>(batch) * Model::mask_tokens) {
        simmim::Rng rng(simmim::derive_seed(2022, static_cast<std::uint64_t>(batch)));
        for (auto& x : images) x = static_cast<float>(rng.normal());
        model->draw_mask(7, 0, batch, mask.data());
    }
    float step() {
        model->zero_grad();
        const float loss = model->forward(images.data(), mask.data(), batch);
        model->backward();
        simmim::clip_grad_norm(model->params(), kClipNorm);
        optimizer.step(lr);
        return loss;
    }
    int batch;
    double lr;
    std::unique_ptr<Model> model;
    simmim::AdamW<float> optimizer;
    std::vector<float> images;  // (B, C, S, S)
    std::vector<float> mask;    // (B, h, w), 1 = masked
};

/// Loss finite at every step and lower after kValidationSteps steps on the fixed batch, or exit(1).
template <auto C>
void validate(TrainingSetup<C>& setup, const char* name) {
    std::vector<float> losses;
    for (int s = 0; s < kValidationSteps; ++s) losses.push_back(setup.step());
    bool finite = true;
    for (const float loss : losses) finite = finite && std::isfinite(loss);
    if (!finite || !(losses.back() < losses.front())) {
        std::fprintf(stderr, "bench_train_step: %s: the loss over %d steps on a fixed batch is not finite and "
                             "decreasing:", name, kValidationSteps);
        for (const float loss : losses) std::fprintf(stderr, " %g", loss);
        std::fprintf(stderr, "\n");
        std::exit(1);
    }
    std::printf("validated %s: loss %.5f -> %.5f over %d steps\n", name, losses.front(), losses.back(),
                kValidationSteps);
}

template <auto C, simmim::kernels::MatmulPrecision P>
void BM_train_step(benchmark::State& state, const char* name, int batch) {
    const simmim::kernels::ScopedMatmulPrecision precision(P);
    // Built and validated once per process and precision; repetitions reuse it (a repetition is a fresh State).
    static TrainingSetup<C> setup(batch, learning_rate(name));
    static const bool validated = (validate(setup, name), true);
    benchmark::DoNotOptimize(validated);
    float loss = 0;
    for (auto _ : state) {
        loss = setup.step();
        benchmark::DoNotOptimize(loss);
    }
    if (!std::isfinite(loss)) state.SkipWithError("non-finite loss while timing");
    const double flops = train_step_flops<C>(batch);
    state.SetItemsProcessed(state.iterations() * batch);
    state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_frac"] =
        benchmark::Counter(flops / (g_peak_gflops * 1e9), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_GFLOP/s"] = g_peak_gflops;
    if (P == simmim::kernels::MatmulPrecision::bf16) {
        state.counters["bf16_peak_GFLOP/s"] = g_bf16_peak_gflops;
        state.counters["bf16_peak_frac"] =
            benchmark::Counter(flops / (g_bf16_peak_gflops * 1e9), benchmark::Counter::kIsIterationInvariantRate);
    }
    state.counters["peak_rss_MB"] = peak_rss_megabytes();
    state.counters["activations_MB"] = static_cast<double>(PresetModel<C>::type::activation_bytes(batch)) / 1048576.0;
    state.counters["threads"] = static_cast<double>(
#ifdef _OPENMP
        omp_get_max_threads()
#else
        1
#endif
    );
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    g_peak_gflops = measure_peak_gflops(0.5);
    std::printf("FP32 FMA peak, all OpenMP threads: %.1f GFLOP/s\n", g_peak_gflops);
    const bool bf16 = simmim::kernels::cpu_supports_bf16();
    if (bf16) {
        g_bf16_peak_gflops = measure_bf16_peak_gflops(0.5);
        std::printf("bf16 VDPBF16PS peak, all OpenMP threads: %.1f GFLOP/s\n", g_bf16_peak_gflops);
    } else {
        std::printf("no AVX512-BF16 on this CPU (or SIMMIM_NO_BF16 set): the bf16 runs are not registered\n");
    }
    namespace P = simmim::presets;
    using simmim::kernels::MatmulPrecision;
    const auto register_preset = [bf16](const char* name, auto fp32_function, auto bf16_function, int batch) {
        const std::string label = std::string("train_step/") + name + "/batch" + std::to_string(batch);
        benchmark::RegisterBenchmark((label + "/fp32").c_str(), fp32_function, name, batch)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(3);
        if (bf16)
            benchmark::RegisterBenchmark((label + "/bf16").c_str(), bf16_function, name, batch)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond)
                ->Iterations(3);
    };
#define SIMMIM_BENCH_PRESET(NAME, CONFIG, BATCH)                                                          \
    register_preset(NAME, BM_train_step<CONFIG, MatmulPrecision::fp32>, BM_train_step<CONFIG, MatmulPrecision::bf16>, \
                    BATCH)
    SIMMIM_BENCH_PRESET("vit-t4-32", P::vit_t4_32, 64);
    SIMMIM_BENCH_PRESET("vit-t16-224", P::vit_t16_224, 16);
    SIMMIM_BENCH_PRESET("vit-s16-224", P::vit_s16_224, 8);
    SIMMIM_BENCH_PRESET("vit-b16-224", P::vit_b16_224, 8);
    SIMMIM_BENCH_PRESET("swin-d32", P::swin_d32, 64);
    SIMMIM_BENCH_PRESET("swin-b-192", P::swin_b_192, 4);
#undef SIMMIM_BENCH_PRESET
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
