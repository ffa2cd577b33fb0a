// tests/test_bf16.cpp: bf16 matrix products (kernels/gemm_bf16.hpp).
//
// Oracles:
//   - the rounding: bf16_bits against an independent round-to-nearest-even on long doubles (frexp/ldexp and
//     nearbyint), and against its definition on hand-picked cases (ties, carries into the exponent, overflow
//     to infinity, denormals, NaN);
//   - the kernel: an FP64 (long double) product of the bf16-rounded operands; the only difference allowed is
//     the FP32 accumulation, (K + 2) units of FP32 round-off of sum_k |a_k b_k|;
//   - the ops in bf16 against the same ops in FP32, within the error bf16 rounding can make, stated per test;
//   - a SimMIM model's loss and gradients in bf16 against FP32.
// Every case skips (CTest skip) on a CPU without AVX512-BF16, except the rounding and the refusal, which run
// everywhere.
#include <catch2/catch.hpp>

#include <cfenv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/core/random.hpp"
#include "simmim/kernels/gemm.hpp"
#include "simmim/kernels/gemm_bf16.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/simmim.hpp"
#include "skip.hpp"

namespace {

using Index = std::ptrdiff_t;
using simmim::kernels::MatmulPrecision;

float from_bits(std::uint32_t u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
std::uint32_t to_bits(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

/// x rounded to 8 significant bits, ties to even, by arithmetic on long double (no bit tricks); denormal
/// inputs give a zero of their sign (the hardware's DAZ); overflow gives infinity.
float reference_bf16(float x) {
    if (std::isnan(x) || std::isinf(x) || x == 0.0f) return x;
    if (std::fpclassify(x) == FP_SUBNORMAL) return std::signbit(x) ? -0.0f : 0.0f;
    int e = 0;
    const long double m = std::frexp(static_cast<long double>(x), &e);  // x = m 2^e, 0.5 <= |m| < 1
    const int saved = std::fegetround();
    std::fesetround(FE_TONEAREST);
    const long double r = std::nearbyint(std::ldexp(m, 8));             // 8 significant bits, ties to even
    std::fesetround(saved);
    const long double y = std::ldexp(r, e - 8);
    if (std::fabs(y) > static_cast<long double>(std::numeric_limits<float>::max()))
        return std::signbit(x) ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
    return static_cast<float>(y);
}

bool have_bf16() { return simmim::kernels::cpu_supports_bf16(); }

#define REQUIRE_BF16_CPU()                                                                       \
    if (!have_bf16()) {                                                                          \
        SIMMIM_SKIP("this CPU has no AVX512-BF16 (or SIMMIM_NO_BF16 is set): no bf16 kernel to test"); \
    }

struct Matrix {
    Index rows, cols, ld;
    std::vector<float> data;
    Matrix(Index r, Index c, Index pad, std::uint64_t seed)
        : rows(r), cols(c), ld(c + pad),
          data(static_cast<std::size_t>(std::max<Index>(1, r * (c + pad))), std::numeric_limits<float>::quiet_NaN()) {
        simmim::Rng rng(seed);
        for (Index i = 0; i < r; ++i)
            for (Index j = 0; j < c; ++j) at(i, j) = static_cast<float>(rng.uniform(-1.0, 1.0));
    }
    float& at(Index i, Index j) { return data[static_cast<std::size_t>(i * ld + j)]; }
    float at(Index i, Index j) const { return data[static_cast<std::size_t>(i * ld + j)]; }
};

/// gemm in bf16 against the long-double product of the rounded operands, for alpha, beta in {1, 0.5} x
/// {0, 1, 0.5}; C's padding must come back untouched (NaN), and beta = 0 must not read C (NaN-filled).
void check_bf16_shape(Index M, Index N, Index K, bool ta, bool tb, Index pad, std::uint64_t seed) {
    const Matrix A = ta ? Matrix(K, M, pad, simmim::derive_seed(seed, 1)) : Matrix(M, K, pad, simmim::derive_seed(seed, 1));
    const Matrix B = tb ? Matrix(N, K, pad, simmim::derive_seed(seed, 2)) : Matrix(K, N, pad, simmim::derive_seed(seed, 2));
    const Matrix C0(M, N, pad, simmim::derive_seed(seed, 3));
    // op(A) (M, K) and op(B)^T (N, K) rounded by the oracle, once
    std::vector<float> a16(static_cast<std::size_t>(M * K)), b16(static_cast<std::size_t>(N * K));
    for (Index k = 0; k < K; ++k) {
        for (Index i = 0; i < M; ++i) a16[static_cast<std::size_t>(i * K + k)] = reference_bf16(ta ? A.at(k, i) : A.at(i, k));
        for (Index j = 0; j < N; ++j) b16[static_cast<std::size_t>(j * K + k)] = reference_bf16(tb ? B.at(j, k) : B.at(k, j));
    }
    std::vector<long double> product(static_cast<std::size_t>(M * N)), magnitude(static_cast<std::size_t>(M * N));
    for (Index i = 0; i < M; ++i)
        for (Index j = 0; j < N; ++j) {
            long double s = 0, m = 0;
            for (Index k = 0; k < K; ++k) {
                const long double a = a16[static_cast<std::size_t>(i * K + k)];
                const long double b = b16[static_cast<std::size_t>(j * K + k)];
                s += a * b;
                m += std::fabs(a * b);
            }
            product[static_cast<std::size_t>(i * N + j)] = s;
            magnitude[static_cast<std::size_t>(i * N + j)] = m;
        }
    const simmim::kernels::ScopedMatmulPrecision bf16(MatmulPrecision::bf16);
    for (const float alpha : {1.0f, 0.5f})
        for (const float beta : {0.0f, 1.0f, 0.5f}) {
            INFO("M=" << M << " N=" << N << " K=" << K << " trans_a=" << ta << " trans_b=" << tb << " alpha=" << alpha
                      << " beta=" << beta << " pad=" << pad);
            Matrix C = C0;
            if (beta == 0.0f)
                for (Index i = 0; i < M; ++i)
                    for (Index j = 0; j < N; ++j) C.at(i, j) = std::numeric_limits<float>::quiet_NaN();
            simmim::kernels::gemm<float>(ta, tb, M, N, K, alpha, A.data.data(), A.ld, B.data.data(), B.ld, beta,
                                         C.data.data(), C.ld);
            Index bad = 0;
            for (Index i = 0; i < M; ++i) {
                for (Index j = 0; j < N; ++j) {
                    const auto e = static_cast<std::size_t>(i * N + j);
                    const long double c0 = C0.at(i, j);
                    const long double want = alpha * product[e] + (beta == 0.0f ? 0.0L : beta * c0);
                    const long double tol = (K + 2) * static_cast<long double>(std::numeric_limits<float>::epsilon()) *
                                                (alpha * magnitude[e] + std::fabs(beta * c0)) +
                                            std::numeric_limits<float>::min();
                    if (!(std::fabs(C.at(i, j) - want) <= tol) && bad++ < 3)
                        FAIL_CHECK("C(" << i << ", " << j << ") = " << C.at(i, j) << ", expected "
                                        << static_cast<double>(want) << " +- " << static_cast<double>(tol));
                }
                for (Index j = N; j < C.ld; ++j)
                    if (!std::isnan(C.at(i, j)) && bad++ < 3) FAIL_CHECK("padding C(" << i << ", " << j << ") was written");
            }
            CHECK(bad == 0);
        }
}

}  // namespace

TEST_CASE("bf16 rounding is round-to-nearest-even with denormals to zero, checked against long-double arithmetic",
          "[bf16]") {
    using simmim::kernels::bf16_bits;
    using simmim::kernels::bf16_round;
    // ties go to the even neighbour, above a tie rounds up, below rounds down
    CHECK(bf16_round(from_bits(0x3F808000u)) == 1.0f);                 // 1 + 2^-8: tie, 1 is even
    CHECK(to_bits(bf16_round(from_bits(0x3F818000u))) == 0x3F820000u);  // 1 + 3 2^-8: tie, up to even
    CHECK(to_bits(bf16_round(from_bits(0x3F808001u))) == 0x3F810000u);  // just above the tie
    CHECK(to_bits(bf16_round(from_bits(0x3F807FFFu))) == 0x3F800000u);  // just below
    CHECK(to_bits(bf16_round(from_bits(0x3FFFFFFFu))) == 0x40000000u);  // carry into the exponent
    CHECK(std::isinf(bf16_round(std::numeric_limits<float>::max())));   // rounds past the largest bf16
    CHECK(bf16_round(-0.0f) == 0.0f);
    CHECK(std::signbit(bf16_round(-0.0f)));
    CHECK(bf16_round(std::numeric_limits<float>::denorm_min()) == 0.0f);
    CHECK(std::signbit(bf16_round(-std::numeric_limits<float>::denorm_min())));
    CHECK(std::isnan(bf16_round(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::isnan(bf16_round(from_bits(0x7F800001u))));  // a signalling NaN whose payload is below bit 16
    CHECK(bf16_round(std::numeric_limits<float>::infinity()) == std::numeric_limits<float>::infinity());
    // every exponent and many mantissas, against the long-double oracle
    simmim::Rng rng(5);
    Index bad = 0;
    for (int n = 0; n < 200000; ++n) {
        const auto u = static_cast<std::uint32_t>(rng() >> 32);
        const float x = from_bits(u);
        if (std::isnan(x)) continue;
        const float want = reference_bf16(x);
        const float got = bf16_round(x);
        if (to_bits(got) != to_bits(want) && bad++ < 5)
            FAIL_CHECK("bf16(" << std::hexfloat << x << ") = " << got << ", expected " << want);
        if ((bf16_bits(x) & 0xFFFFu) != (to_bits(got) >> 16) && bad++ < 5) FAIL_CHECK("bf16_bits disagrees with bf16_round");
    }
    CHECK(bad == 0);
}

TEST_CASE("bf16 matmul precision is refused, with the reason, when the CPU cannot run it", "[bf16]") {
    REQUIRE(simmim::kernels::matmul_precision() == MatmulPrecision::fp32);
    ::setenv("SIMMIM_NO_BF16", "1", 1);
    CHECK_FALSE(simmim::kernels::cpu_supports_bf16());
    try {
        simmim::kernels::set_matmul_precision(MatmulPrecision::bf16);
        FAIL("set_matmul_precision(bf16) did not throw with SIMMIM_NO_BF16=1");
    } catch (const std::runtime_error& e) {
#if defined(SIMMIM_BF16_KERNEL)
        CHECK(std::string(e.what()).find("SIMMIM_NO_BF16") != std::string::npos);
#else
        CHECK(std::string(e.what()).find("no bf16 kernel") != std::string::npos);  // a build without the kernel
#endif
    }
    CHECK(simmim::kernels::matmul_precision() == MatmulPrecision::fp32);  // unchanged
    ::unsetenv("SIMMIM_NO_BF16");
    CHECK_NOTHROW(simmim::kernels::set_matmul_precision(MatmulPrecision::fp32));
}

TEST_CASE("bf16 gemm equals the FP64 product of the bf16-rounded operands up to FP32 accumulation", "[bf16]") {
    REQUIRE_BF16_CPU();
    // 1031 spans three K blocks (512) and ends odd (a zero partner); 130 and 300 more than one M block (128)
    // and a row tail; 3100 more than one N block (3072); 17, 50, 63 column tails of 1 to 3 vectors
    struct Shape {
        Index M, N, K;
    };
    const Shape shapes[] = {{1, 1, 1},    {1, 7, 2},     {7, 1, 3},     {8, 48, 32},   {17, 50, 33},
                            {63, 17, 64}, {130, 100, 1031}, {300, 63, 17}, {9, 3100, 5}, {300, 300, 129}};
    std::uint64_t seed = 100;
    for (const auto& s : shapes)
        for (const bool ta : {false, true})
            for (const bool tb : {false, true}) check_bf16_shape(s.M, s.N, s.K, ta, tb, (seed % 3) * 5, seed++);
}

TEST_CASE("bf16 gemm covers every register-tile shape: row tails 1..16 and column tails around whole vectors",
          "[bf16]") {
    REQUIRE_BF16_CPU();
    std::uint64_t seed = 400;
    for (Index M = 1; M <= 16; ++M)
        for (const Index N : {1, 15, 16, 17, 31, 32, 33, 47, 48, 49})
            check_bf16_shape(M, N, 9 + M % 4, M % 2 == 0, N % 2 == 0, 1, seed++);
}

TEST_CASE("bf16 gemm is bitwise deterministic across runs and thread counts", "[bf16]") {
    REQUIRE_BF16_CPU();
    const Index M = 300, N = 200, K = 700;
    const Matrix A(M, K, 0, 1), B(N, K, 0, 2);
    const simmim::kernels::ScopedMatmulPrecision bf16(MatmulPrecision::bf16);
    const auto run = [&](int threads) {
        std::vector<float> C(static_cast<std::size_t>(M * N));
#ifdef _OPENMP
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
#endif
        simmim::kernels::gemm<float>(false, true, M, N, K, 1.0f, A.data.data(), K, B.data.data(), K, 0.0f, C.data(), N);
#ifdef _OPENMP
        omp_set_num_threads(saved);
#endif
        (void)threads;
        return C;
    };
    const auto one = run(1);
    CHECK(run(1) == one);
    CHECK(run(2) == one);
    CHECK(run(3) == one);
}

TEST_CASE("linear forward and backward in bf16 stay within the error of bf16 operands of the FP32 results", "[bf16]") {
    REQUIRE_BF16_CPU();
    // Each bf16 operand is within 2^-9 (relative) of its FP32 value, so a product a b is within about
    // 2^-8 |a b| and a sum of K products within 2^-8 sum |a b| (plus FP32 accumulation, far below): the bound
    // checked, per element, is 2^-8 sum_k |a_k b_k| computed in long double.
    const Index M = 70, K = 96, Nout = 80;
    simmim::Rng rng(9);
    const auto fill = [&](Index n) {
        std::vector<float> v(static_cast<std::size_t>(n));
        for (auto& x : v) x = static_cast<float>(rng.normal());
        return v;
    };
    const auto x = fill(M * K), w = fill(Nout * K), b = fill(Nout), dy = fill(M * Nout);
    std::vector<float> y32(static_cast<std::size_t>(M * Nout)), y16 = y32;
    std::vector<float> dx32(static_cast<std::size_t>(M * K)), dx16 = dx32, dw32(static_cast<std::size_t>(Nout * K), 0.0f),
        dw16 = dw32, db32(static_cast<std::size_t>(Nout), 0.0f), db16 = db32;
    simmim::ops::linear_forward(y32.data(), x.data(), w.data(), b.data(), M, K, Nout);
    simmim::ops::linear_backward(dx32.data(), dw32.data(), db32.data(), dy.data(), x.data(), w.data(), M, K, Nout, 0.0f);
    {
        const simmim::kernels::ScopedMatmulPrecision bf16(MatmulPrecision::bf16);
        simmim::ops::linear_forward(y16.data(), x.data(), w.data(), b.data(), M, K, Nout);
        simmim::ops::linear_backward(dx16.data(), dw16.data(), db16.data(), dy.data(), x.data(), w.data(), M, K, Nout, 0.0f);
    }
    const long double u = std::ldexp(1.0L, -8);
    Index bad = 0, inexact = 0;
    for (Index i = 0; i < M; ++i)
        for (Index j = 0; j < Nout; ++j) {
            long double mag = 0;
            for (Index k = 0; k < K; ++k) mag += std::fabs(static_cast<long double>(x[i * K + k]) * w[j * K + k]);
            const float got = y16[i * Nout + j], want = y32[i * Nout + j];
            inexact += got != want;
            if (!(std::fabs(got - want) <= u * mag) && bad++ < 3) FAIL_CHECK("y(" << i << ", " << j << ") " << got << " vs " << want);
        }
    for (Index i = 0; i < M; ++i)
        for (Index k = 0; k < K; ++k) {
            long double mag = 0;
            for (Index j = 0; j < Nout; ++j) mag += std::fabs(static_cast<long double>(dy[i * Nout + j]) * w[j * K + k]);
            if (!(std::fabs(dx16[i * K + k] - dx32[i * K + k]) <= u * mag) && bad++ < 3) FAIL_CHECK("dx(" << i << ", " << k << ")");
        }
    for (Index j = 0; j < Nout; ++j)
        for (Index k = 0; k < K; ++k) {
            long double mag = 0;
            for (Index i = 0; i < M; ++i) mag += std::fabs(static_cast<long double>(dy[i * Nout + j]) * x[i * K + k]);
            if (!(std::fabs(dw16[j * K + k] - dw32[j * K + k]) <= u * mag) && bad++ < 3) FAIL_CHECK("dw(" << j << ", " << k << ")");
        }
    CHECK(bad == 0);
    CHECK(inexact > M * Nout / 2);  // the bf16 path did run: most outputs differ from FP32
    CHECK(db16 == db32);            // the bias gradient is a column sum, FP32 in both
}

TEST_CASE("a SimMIM step in bf16 gives the FP32 loss and gradients within bf16 error", "[bf16]") {
    REQUIRE_BF16_CPU();
    // The whole model: vit-tiny-test (ViT), batch 4, one forward and backward in each precision from the
    // same parameters. Stated tolerances: loss within 1% relative; the gradient of the whole arena within
    // 3% relative L2 distance and cosine similarity above 0.999 (bf16 operands carry 8 bits; the errors
    // of 2 blocks of products average out in the norms).
    using namespace simmim;
    constexpr auto C = presets::vit_tiny_test;
    ViTSimMIM<float, C> model(random_mask_patch<C, presets::mask_32px>(), 3);
    const int B = 4;
    std::vector<float> images(static_cast<std::size_t>(B) * decltype(model)::image_numel);
    Rng rng(4);
    for (auto& v : images) v = static_cast<float>(rng.normal());
    std::vector<float> mask(static_cast<std::size_t>(B) * decltype(model)::mask_tokens);
    model.draw_mask(11, 0, B, mask.data());
    const auto step = [&] {
        model.zero_grad();
        const float loss = model.forward(images.data(), mask.data(), B);
        model.backward();
        return std::pair{loss, std::vector<double>(model.params().grads(), model.params().grads() + model.params().size())};
    };
    const auto [loss32, g32] = step();
    std::pair<float, std::vector<double>> bf;
    {
        const kernels::ScopedMatmulPrecision bf16(kernels::MatmulPrecision::bf16);
        bf = step();
    }
    const auto& [loss16, g16] = bf;
    CHECK(std::fabs(loss16 - loss32) <= 0.01 * std::fabs(loss32));
    CHECK(loss16 != loss32);  // the bf16 path ran
    double dot = 0, n32 = 0, n16 = 0, diff = 0;
    for (std::size_t i = 0; i < g32.size(); ++i) {
        dot += g32[i] * g16[i];
        n32 += g32[i] * g32[i];
        n16 += g16[i] * g16[i];
        diff += (g32[i] - g16[i]) * (g32[i] - g16[i]);
    }
    INFO("relative L2 " << std::sqrt(diff / n32) << ", cosine " << dot / std::sqrt(n32 * n16));
    CHECK(std::sqrt(diff / n32) < 0.03);
    CHECK(dot / std::sqrt(n32 * n16) > 0.999);
    // and FP32 again gives the FP32 bits: the precision was restored
    const auto [loss32b, g32b] = step();
    CHECK(loss32b == loss32);
    CHECK(g32b == g32);
}
