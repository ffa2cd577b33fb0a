// tests/test_dispatch.cpp: the run-time instruction-set choice of simmim::kernels (kernels/dispatch.hpp).
// Oracles: the CPU's own CPUID bits (__builtin_cpu_supports) for the levels offered, the SIMMIM_ISA cap for the
// level chosen, long-double products and the naive attention (ops/attention.hpp) for every level's results, and
// this translation unit's own compile-time kernels for the bits of the level it is compiled for. The whole
// kernels suite also runs once per level (CTest tests isa.<level>.kernels, SIMMIM_ISA=<level>).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/kernels/dispatch.hpp"
#include "simmim/kernels/gemm.hpp"
#include "simmim/ops/attention.hpp"
#include "simmim/ops/attention_bias.hpp"
#include "simmim/ops/attention_fused.hpp"
#include "skip.hpp"

#if defined(SIMMIM_EXTERN_KERNELS)
namespace {

namespace dispatch = simmim::kernels::dispatch;

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

std::vector<float> uniform(std::size_t n, std::uint64_t seed) {
    simmim::Rng rng(seed);
    std::vector<float> v(n);
    for (float& x : v) x = static_cast<float>(rng.uniform(-1.0, 1.0));
    return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
    return m;
}

/// Restores the level in use at construction.
struct RestoreLevel {
    std::string level = dispatch::active().name;
    ~RestoreLevel() { dispatch::select(level); }
};

}  // namespace

TEST_CASE("dispatch offers the levels the CPU runs and picks the best one under the SIMMIM_ISA cap", "[dispatch]") {
    const std::vector<std::string> levels = dispatch::available();
    CHECK(contains(levels, "baseline"));
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SIMMIM_NO_SIMD)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    CHECK(contains(levels, "avx2") == avx2);
    CHECK(contains(levels, "avx512") == avx512);
    const char* cap = std::getenv("SIMMIM_ISA");
    const std::string want = cap ? cap : "";
    const std::string expected = (want.empty() || want == "avx512") ? (avx512 ? "avx512" : avx2 ? "avx2" : "baseline")
                                 : want == "avx2"                   ? (avx2 ? "avx2" : "baseline")
                                                                    : "baseline";
    INFO("SIMMIM_ISA=" << want);
    CHECK(std::string(dispatch::active().name) == expected);
    CHECK(simmim::kernels::kernel_path().find("run-time dispatch") != std::string::npos);
#endif
}

TEST_CASE("dispatch::select switches the level and refuses unknown ones", "[dispatch]") {
    RestoreLevel restore;
    for (const std::string& level : dispatch::available()) {
        dispatch::select(level);
        CHECK(std::string(dispatch::active().name) == level);
        CHECK(&dispatch::kernels<float>() == &dispatch::active().f32);
    }
    CHECK_THROWS_WITH(dispatch::select("avx1024"), Catch::Contains("no level avx1024") && Catch::Contains("baseline"));
}

TEST_CASE("every level's GEMM and attention match their oracles, and a level's bits do not change", "[dispatch]") {
    RestoreLevel restore;
    // a GEMM with transposes, beta and ragged sizes against long double
    const std::ptrdiff_t M = 37, N = 53, K = 71;
    const auto A = uniform(static_cast<std::size_t>(K * M), 1), B = uniform(static_cast<std::size_t>(N * K), 2),
               C0 = uniform(static_cast<std::size_t>(M * N), 3);
    std::vector<float> reference(static_cast<std::size_t>(M * N));
    for (std::ptrdiff_t i = 0; i < M; ++i)
        for (std::ptrdiff_t j = 0; j < N; ++j) {
            long double s = 0;
            for (std::ptrdiff_t k = 0; k < K; ++k) s += static_cast<long double>(A[k * M + i]) * B[j * K + k];
            reference[i * N + j] = static_cast<float>(0.75L * s + 0.5L * C0[i * N + j]);
        }
    // attention (B = 2, N = 17, H = 2, Dh = 32) against the naive reference, with and without a bias
    const int b = 2, n = 17, h = 2, dh = 32;
    const std::size_t qkv_n = std::size_t(b) * n * 3 * h * dh, out_n = std::size_t(b) * n * h * dh;
    const auto qkv = uniform(qkv_n, 4), dout = uniform(out_n, 5), bias = uniform(std::size_t(h) * n * n, 6);
    std::vector<float> out_ref(out_n), probs(std::size_t(b) * h * n * n), dqkv_ref(qkv_n, 0.f);
    simmim::ops::attention_forward(out_ref.data(), probs.data(), qkv.data(), b, n, h, dh);
    simmim::ops::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), probs.data(), b, n, h, dh);
    std::vector<float> bias_out_ref(out_n), bias_lse_ref(std::size_t(b) * h * n);
    simmim::ops::attention_bias_forward_reference(bias_out_ref.data(), bias_lse_ref.data(), qkv.data(), bias.data(), b, n, h, dh);

    struct Bits {
        std::vector<float> gemm, out, dqkv, bias_out, bias_dqkv;
    };
    const auto run = [&] {
        Bits r{C0, std::vector<float>(out_n), std::vector<float>(qkv_n, 0.f), std::vector<float>(out_n),
               std::vector<float>(qkv_n, 0.f)};
        simmim::kernels::gemm<float>(true, true, M, N, K, 0.75f, A.data(), M, B.data(), K, 0.5f, r.gemm.data(), N);
        std::vector<float> lse(std::size_t(b) * h * n), dbias(std::size_t(h) * n * n, 0.f);
        simmim::ops::attention_forward_fused(r.out.data(), lse.data(), qkv.data(), b, n, h, dh);
        simmim::ops::attention_backward_fused(r.dqkv.data(), dout.data(), qkv.data(), r.out.data(), lse.data(), b, n, h, dh);
        simmim::ops::attention_bias_forward(r.bias_out.data(), lse.data(), qkv.data(), bias.data(), b, n, h, dh);
        simmim::ops::attention_bias_backward(r.bias_dqkv.data(), dbias.data(), dout.data(), qkv.data(), r.bias_out.data(),
                                             lse.data(), bias.data(), b, n, h, dh);
        return r;
    };
    const std::vector<std::string> levels = dispatch::available();
    std::vector<Bits> first;
    for (const std::string& level : levels) {
        INFO("level " << level);
        dispatch::select(level);
        first.push_back(run());
        const Bits& r = first.back();
        CHECK(max_abs_diff(r.gemm, reference) <= 1e-5);
        CHECK(max_abs_diff(r.out, out_ref) <= 1e-5);
        CHECK(max_abs_diff(r.dqkv, dqkv_ref) <= 1e-5);
        CHECK(max_abs_diff(r.bias_out, bias_out_ref) <= 1e-5);
    }
    // back through the levels in reverse: each level gives its own bits again
    for (std::size_t i = levels.size(); i-- > 0;) {
        INFO("level " << levels[i]);
        dispatch::select(levels[i]);
        const Bits r = run();
        CHECK(r.gemm == first[i].gemm);
        CHECK(r.out == first[i].out);
        CHECK(r.dqkv == first[i].dqkv);
        CHECK(r.bias_out == first[i].bias_out);
        CHECK(r.bias_dqkv == first[i].bias_dqkv);
    }
    // the level this test is compiled for (-march=native here) gives the bits of this translation unit's own kernels
    const std::string own = simmim::kernels::gemm_float_path;
    if (own != "portable" && contains(levels, own)) {
        dispatch::select(own);
        std::vector<float> mine = C0;
        simmim::kernels::gemm_detail::gemm_entry<float>(true, true, M, N, K, 0.75f, A.data(), M, B.data(), K, 0.5f,
                                                         mine.data(), N, nullptr);
        CHECK(mine == run().gemm);
    }
}

#else
TEST_CASE("dispatch offers the levels the CPU runs and picks the best one under the SIMMIM_ISA cap", "[dispatch]") {
    SIMMIM_SKIP("header-only build: simmim::kernels (run-time dispatch) is not linked");
}
#endif
