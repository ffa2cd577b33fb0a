// benchmarks/bench_masking.cpp: the masking-related work of a SimMIM step, float, all OpenMP threads:
//   mask/generate   RandomMaskPatch::generate for a batch of 128 at (input, mask patch, model patch)
//                   = (192, 32, 4) and (224, 32, 16), ratio 0.6 (one thread: the policy is serial)
//   mask/blend      ops::mask_blend_pos_forward at (B, L, D) = (128, 2304, 128): mask-token blend,
//                   cls token and position embedding, x0 (B, L + 1, D)
//   mask/l1_loss    ops::masked_l1_forward + masked_l1_backward at (B, C, S, S) = (128, 3, 192, 192),
//                   model patch 4 (dpred zeroed and accumulated each iteration, as SimMIM::backward)
// The PyTorch / numpy peer is benchmarks/peer_masking.py. Every case is checked against a brute-force
// oracle in double before timing; a failure exits with a message. items/s counts samples.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/masking/masking.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/masked_l1.hpp"

namespace {

constexpr int kBatch = 128;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "bench_masking: %s\n", what.c_str());
    std::exit(1);
}

std::vector<float> normal_vector(std::size_t n, std::uint64_t key) {
    simmim::Rng rng(simmim::derive_seed(11, key));
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(rng.normal());
    return v;
}

// ---- mask generation ---------------------------------------------------------------------------

struct MaskCase {
    int input, mask_patch, model_patch;
    std::string name() const {
        return "mask/generate/" + std::to_string(input) + "_" + std::to_string(mask_patch) + "_" +
               std::to_string(model_patch) + "/batch" + std::to_string(kBatch);
    }
};

/// Every sample: 0/1 values, constant on each scale x scale block, exactly ceil(R^2 * 0.6) masked blocks.
void validate_masks(const MaskCase& c) {
    const simmim::RandomMaskPatch policy(c.input, c.mask_patch, c.model_patch, 0.6);
    const int g = policy.token_grid(), R = c.input / c.mask_patch, scale = c.mask_patch / c.model_patch;
    const int expected_blocks = static_cast<int>(std::ceil(R * R * 0.6));
    std::vector<float> mask(static_cast<std::size_t>(kBatch) * g * g);
    policy.generate(3, 5, kBatch, mask.data());
    for (int b = 0; b < kBatch; ++b) {
        const float* m = mask.data() + static_cast<std::ptrdiff_t>(b) * g * g;
        int blocks = 0;
        for (int y = 0; y < g; ++y)
            for (int x = 0; x < g; ++x) {
                const float v = m[y * g + x], corner = m[(y / scale * scale) * g + x / scale * scale];
                if ((v != 0.0f && v != 1.0f) || v != corner) fail(c.name() + ": mask is not 0/1 and constant per block");
                if (y % scale == 0 && x % scale == 0) blocks += static_cast<int>(v);
            }
        if (blocks != expected_blocks)
            fail(c.name() + ": sample " + std::to_string(b) + " has " + std::to_string(blocks) +
                 " masked blocks, expected " + std::to_string(expected_blocks));
    }
}

void BM_generate(benchmark::State& state, MaskCase c) {
    const simmim::RandomMaskPatch policy(c.input, c.mask_patch, c.model_patch, 0.6);
    const int g = policy.token_grid();
    std::vector<float> mask(static_cast<std::size_t>(kBatch) * g * g);
    std::int64_t step = 0;
    for (auto _ : state) {
        policy.generate(3, step++, kBatch, mask.data());
        benchmark::DoNotOptimize(mask.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
}

// ---- mask-token blend --------------------------------------------------------------------------

struct BlendInputs {
    static constexpr std::ptrdiff_t B = kBatch, L = 2304, N = L + 1, D = 128;
    std::vector<float> embed = normal_vector(B * L * D, 1);  // (B, L, D)
    std::vector<float> mask;                                 // (B, L), official masks at 192/32/4
    std::vector<float> mask_token = normal_vector(D, 2);     // (D)
    std::vector<float> cls_token = normal_vector(D, 3);      // (D)
    std::vector<float> pos_embed = normal_vector(N * D, 4);  // (N, D)
    std::vector<float> x0 = std::vector<float>(B * N * D);   // (B, N, D)
    BlendInputs() : mask(B * L) { simmim::RandomMaskPatch(192, 32, 4, 0.6).generate(3, 0, kBatch, mask.data()); }
    void run() {
        simmim::ops::mask_blend_pos_forward(x0.data(), embed.data(), mask.data(), mask_token.data(), cls_token.data(),
                                            pos_embed.data(), B, L, D);
    }
};

void validate_blend() {
    BlendInputs in;
    in.run();
    const std::ptrdiff_t B = in.B, L = in.L, N = in.N, D = in.D;
    double worst = 0;
    for (std::ptrdiff_t b = 0; b < B; ++b)
        for (std::ptrdiff_t t = 0; t < N; ++t)
            for (std::ptrdiff_t i = 0; i < D; ++i) {
                double expected = double(in.pos_embed[t * D + i]);
                if (t == 0) {
                    expected += in.cls_token[i];
                } else {
                    const double w = in.mask[b * L + t - 1];
                    expected += double(in.embed[(b * L + t - 1) * D + i]) * (1 - w) + double(in.mask_token[i]) * w;
                }
                worst = std::max(worst, std::fabs(expected - in.x0[(b * N + t) * D + i]));
            }
    if (!(worst <= 1e-5)) fail("mask/blend: max |ours - double oracle| = " + std::to_string(worst) + " > 1e-5");
}

void BM_blend(benchmark::State& state) {
    BlendInputs in;
    for (auto _ : state) {
        in.run();
        benchmark::DoNotOptimize(in.x0.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * in.B);
    // read embed, write x0 (mask, tokens and pos_embed are small)
    state.SetBytesProcessed(state.iterations() * (in.B * in.L + in.B * in.N) * in.D *
                            static_cast<std::int64_t>(sizeof(float)));
}

// ---- masked L1 loss ----------------------------------------------------------------------------

struct LossInputs {
    static constexpr int B = kBatch, C = 3, S = 192, p = 4, g = S / p;
    static constexpr std::size_t numel = static_cast<std::size_t>(B) * C * S * S;
    std::vector<float> pred = normal_vector(numel, 5);    // (B, C, S, S)
    std::vector<float> target = normal_vector(numel, 6);  // (B, C, S, S)
    std::vector<float> mask;                              // (B, g, g)
    std::vector<float> dpred = std::vector<float>(numel); // (B, C, S, S)
    LossInputs() : mask(static_cast<std::size_t>(B) * g * g) {
        simmim::RandomMaskPatch(S, 32, p, 0.6).generate(3, 1, B, mask.data());
    }
    float run() {
        const float loss = simmim::ops::masked_l1_forward(pred.data(), target.data(), mask.data(), B, C, S, p);
        std::fill(dpred.begin(), dpred.end(), 0.0f);
        simmim::ops::masked_l1_backward(dpred.data(), static_cast<float*>(nullptr), 1.0f, pred.data(), target.data(),
                                        mask.data(), B, C, S, p);
        return loss;
    }
};

/// loss = sum |pred - target| m_px / (sum m_px + 1e-5) / C and dpred = sign(pred - target) m_px / (...) / C,
/// in double.
void validate_loss() {
    LossInputs in;
    const float loss = in.run();
    const int B = in.B, C = in.C, S = in.S, p = in.p, g = in.g;
    double mask_pixels = 0, sum = 0;
    for (const float m : in.mask) mask_pixels += double(m) * p * p;
    const double denominator = (mask_pixels + 1e-5) * C;
    double worst_grad = 0;
    for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c)
            for (int y = 0; y < S; ++y)
                for (int x = 0; x < S; ++x) {
                    const std::size_t i = ((static_cast<std::size_t>(b) * C + c) * S + y) * S + x;
                    const double m = in.mask[(static_cast<std::size_t>(b) * g + y / p) * g + x / p];
                    const double diff = double(in.pred[i]) - in.target[i];
                    sum += std::fabs(diff) * m;
                    const double grad = (diff > 0 ? 1.0 : diff < 0 ? -1.0 : 0.0) * m / denominator;
                    worst_grad = std::max(worst_grad, std::fabs(grad - in.dpred[i]));
                }
    const double expected = sum / denominator;
    if (!(std::fabs(loss - expected) <= 1e-5 * expected))
        fail("mask/l1_loss: loss " + std::to_string(loss) + ", double oracle " + std::to_string(expected));
    if (!(worst_grad <= 1e-6 / denominator))
        fail("mask/l1_loss: max |dpred - double oracle| = " + std::to_string(worst_grad));
}

void BM_loss(benchmark::State& state) {
    LossInputs in;
    for (auto _ : state) {
        benchmark::DoNotOptimize(in.run());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * in.B);
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    const MaskCase mask_cases[] = {{192, 32, 4}, {224, 32, 16}};
    for (const MaskCase& c : mask_cases) validate_masks(c);
    validate_blend();
    validate_loss();
    std::printf("validated mask generation, blend and masked L1 loss against brute-force oracles\n");
    for (const MaskCase& c : mask_cases)
        benchmark::RegisterBenchmark(c.name().c_str(), BM_generate, c)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("mask/blend/128_2304_128", BM_blend)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("mask/l1_loss_fwdbwd/128_3_192_192_p4", BM_loss)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
