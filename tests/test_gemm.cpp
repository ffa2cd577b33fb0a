// tests/test_gemm.cpp: simmim::kernels::gemm against a scalar triple loop accumulated in long
// double, over all transpose combinations, alpha/beta in {0, 1, 0.5}, ragged sizes, padded leading
// dimensions, NaN garbage where nothing may be read, and bitwise determinism.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/core/random.hpp"
#include "simmim/kernels/gemm.hpp"

namespace {

using Index = std::ptrdiff_t;

/// A rows x cols row-major matrix with row stride ld = cols + pad; the padding holds NaN, so a
/// kernel reading it would poison its result.
template <class T>
struct Padded {
    Index rows, cols, ld;
    std::vector<T> data;
    Padded(Index rows_, Index cols_, Index pad, std::uint64_t seed)
        : rows(rows_), cols(cols_), ld(cols_ + pad),
          data(static_cast<std::size_t>(std::max<Index>(1, rows_ * (cols_ + pad))),
               std::numeric_limits<T>::quiet_NaN()) {
        simmim::Rng rng(seed);
        for (Index i = 0; i < rows; ++i)
            for (Index j = 0; j < cols; ++j) at(i, j) = static_cast<T>(rng.uniform(-1.0, 1.0));
    }
    T& at(Index i, Index j) { return data[static_cast<std::size_t>(i * ld + j)]; }
    T at(Index i, Index j) const { return data[static_cast<std::size_t>(i * ld + j)]; }
};

struct Shape {
    Index M, N, K;
};

std::string describe(const Shape& s, bool ta, bool tb, double alpha, double beta) {
    return "M=" + std::to_string(s.M) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) +
           " trans_a=" + std::to_string(ta) + " trans_b=" + std::to_string(tb) + " alpha=" + std::to_string(alpha) +
           " beta=" + std::to_string(beta);
}

/// The oracle: op(A) op(B) and sum_k |op(A)_ik| |op(B)_kj| per element, in long double.
template <class T>
void reference_product(bool ta, bool tb, const Shape& s, const Padded<T>& A, const Padded<T>& B,
                       std::vector<long double>& product, std::vector<long double>& magnitude) {
    product.assign(static_cast<std::size_t>(s.M * s.N), 0.0L);
    magnitude.assign(static_cast<std::size_t>(s.M * s.N), 0.0L);
    for (Index i = 0; i < s.M; ++i)
        for (Index j = 0; j < s.N; ++j) {
            long double sum = 0, mag = 0;
            for (Index k = 0; k < s.K; ++k) {
                const long double a = ta ? A.at(k, i) : A.at(i, k);
                const long double b = tb ? B.at(j, k) : B.at(k, j);
                sum += a * b;
                mag += std::fabs(a * b);
            }
            product[static_cast<std::size_t>(i * s.N + j)] = sum;
            magnitude[static_cast<std::size_t>(i * s.N + j)] = mag;
        }
}

/// Runs every alpha/beta combination on one shape and transpose pair and checks each element of
/// C against alpha * product + beta * C0 within (K + 2) unit round-offs of the magnitudes involved;
/// C's padding must come back untouched.
template <class T>
void check_shape(const Shape& s, bool ta, bool tb, Index pad, std::uint64_t seed) {
    const Padded<T> A = ta ? Padded<T>(s.K, s.M, pad, simmim::derive_seed(seed, 1))
                           : Padded<T>(s.M, s.K, pad, simmim::derive_seed(seed, 1));
    const Padded<T> B = tb ? Padded<T>(s.N, s.K, pad, simmim::derive_seed(seed, 2))
                           : Padded<T>(s.K, s.N, pad, simmim::derive_seed(seed, 2));
    const Padded<T> C0(s.M, s.N, pad, simmim::derive_seed(seed, 3));
    std::vector<long double> product, magnitude;
    reference_product(ta, tb, s, A, B, product, magnitude);
    const long double unit = std::numeric_limits<T>::epsilon();
    for (const double alpha : {0.0, 1.0, 0.5})
        for (const double beta : {0.0, 1.0, 0.5}) {
            INFO(describe(s, ta, tb, alpha, beta) << " pad=" << pad);
            Padded<T> C = C0;
            // beta == 0: C must not be read, so start from NaN everywhere.
            if (beta == 0.0)
                for (Index i = 0; i < s.M; ++i)
                    for (Index j = 0; j < s.N; ++j) C.at(i, j) = std::numeric_limits<T>::quiet_NaN();
            simmim::kernels::gemm<T>(ta, tb, s.M, s.N, s.K, static_cast<T>(alpha), A.data.data(), A.ld, B.data.data(),
                                     B.ld, static_cast<T>(beta), C.data.data(), C.ld);
            Index bad = 0;
            for (Index i = 0; i < s.M; ++i) {
                for (Index j = 0; j < s.N; ++j) {
                    const std::size_t e = static_cast<std::size_t>(i * s.N + j);
                    const long double c0 = C0.at(i, j);
                    const long double want = alpha * product[e] + (beta == 0.0 ? 0.0L : beta * c0);
                    const long double scale = std::fabs(alpha) * magnitude[e] + std::fabs(beta * c0);
                    const long double tol = (s.K + 2) * unit * scale + std::numeric_limits<T>::min();
                    const long double got = C.at(i, j);
                    if (!(std::fabs(got - want) <= tol) && bad++ < 3)
                        FAIL_CHECK("C(" << i << ", " << j << ") = " << static_cast<double>(got) << ", expected "
                                        << static_cast<double>(want) << " +- " << static_cast<double>(tol));
                }
                for (Index j = s.N; j < C.ld; ++j)
                    if (!std::isnan(C.at(i, j)) && bad++ < 3)
                        FAIL_CHECK("padding C(" << i << ", " << j << ") was written");
            }
            CHECK(bad == 0);
        }
}

// Every size in {1, 7, 17, 63, 65, 129, 300} appears in each role; 300 exceeds one K block and
// one M block of the packed kernel, 3100 one N block; the 300 x 300 products are large enough to
// run on several threads (split along M, and along N for 17 x 300).
const Shape kShapes[] = {{1, 1, 1},     {1, 7, 17},    {7, 1, 63},    {17, 65, 1},   {63, 129, 7},
                         {65, 17, 300}, {129, 63, 65}, {300, 65, 17}, {7, 300, 129}, {300, 300, 17},
                         {17, 300, 300}, {9, 3100, 5}};

}  // namespace

TEMPLATE_TEST_CASE("gemm matches a long-double triple loop (all transposes, alpha, beta, ragged sizes)", "[gemm]",
                   float, double) {
    std::uint64_t seed = 100;
    for (const Shape& s : kShapes)
        for (const bool ta : {false, true})
            for (const bool tb : {false, true}) check_shape<TestType>(s, ta, tb, 0, ++seed);
}

TEMPLATE_TEST_CASE("gemm reads and writes only inside leading dimensions wider than the rows", "[gemm]", float,
                   double) {
    std::uint64_t seed = 200;
    for (const Shape& s : {Shape{7, 17, 63}, Shape{65, 129, 17}, Shape{300, 63, 65}})
        for (const bool ta : {false, true})
            for (const bool tb : {false, true}) check_shape<TestType>(s, ta, tb, 5, ++seed);
}

TEST_CASE("gemm covers every register-tile shape: row tails 1..16, column tails around whole vectors", "[gemm]") {
    std::uint64_t seed = 300;
    for (Index M = 1; M <= 16; ++M)
        for (const Index N : {1, 8, 15, 16, 24, 32, 40, 47, 48, 49, 64, 97})
            for (const bool ta : {false, true})
                for (const bool tb : {false, true}) check_shape<float>(Shape{M, N, 9}, ta, tb, 0, ++seed);
}

TEST_CASE("gemm called inside an OpenMP parallel region gives the same bits as outside", "[gemm]") {
    const Shape s{150, 170, 180};  // > 2^20 multiply-adds: threaded when called outside a region
    const Padded<float> A(s.M, s.K, 0, 11), B(s.N, s.K, 0, 12);
    const auto run = [&](std::vector<float>& c) {
        simmim::kernels::gemm<float>(false, true, s.M, s.N, s.K, 1.0f, A.data.data(), A.ld, B.data.data(), B.ld, 0.0f,
                                     c.data(), s.N);
    };
    std::vector<float> outside(static_cast<std::size_t>(s.M * s.N));
    run(outside);
    std::vector<std::vector<float>> inside(4, std::vector<float>(outside.size()));
#pragma omp parallel for schedule(static)
    for (int t = 0; t < 4; ++t) run(inside[static_cast<std::size_t>(t)]);
    for (const auto& c : inside) CHECK(std::memcmp(c.data(), outside.data(), c.size() * sizeof(float)) == 0);
}

TEMPLATE_TEST_CASE("gemm with alpha = 0 or K = 0 scales C by beta without reading A and B", "[gemm]", float,
                   double) {
    using T = TestType;
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const std::vector<T> a(12, nan), b(12, nan);
    std::vector<T> c = {1, 2, 3, 4, 5, 6};  // (2, 3)
    simmim::kernels::gemm<T>(false, false, 2, 3, 4, T(0), a.data(), 4, b.data(), 3, T(0.5), c.data(), 3);
    CHECK(c == std::vector<T>{0.5, 1, 1.5, 2, 2.5, 3});
    simmim::kernels::gemm<T>(false, false, 2, 3, 0, T(1), a.data(), 0, b.data(), 3, T(2), c.data(), 3);
    CHECK(c == std::vector<T>{1, 2, 3, 4, 5, 6});
    std::fill(c.begin(), c.end(), nan);
    simmim::kernels::gemm<T>(true, true, 2, 3, 4, T(0), a.data(), 2, b.data(), 4, T(0), c.data(), 3);
    CHECK(c == std::vector<T>(6, T(0)));
    // M = 0 or N = 0: nothing to do, nothing touched (null C allowed).
    simmim::kernels::gemm<T>(false, false, 0, 3, 4, T(1), a.data(), 4, b.data(), 3, T(0), nullptr, 3);
    simmim::kernels::gemm<T>(false, false, 2, 0, 4, T(1), a.data(), 4, b.data(), 0, T(0), nullptr, 0);
}

TEMPLATE_TEST_CASE("gemm is bitwise deterministic, also across thread counts", "[gemm]", float, double) {
    using T = TestType;
    const Shape s{261, 203, 290};  // ragged in every dimension, > 2^20 multiply-adds: threaded
    for (const bool ta : {false, true})
        for (const bool tb : {false, true}) {
            INFO("trans_a=" << ta << " trans_b=" << tb);
            const Padded<T> A = ta ? Padded<T>(s.K, s.M, 0, 1) : Padded<T>(s.M, s.K, 0, 1);
            const Padded<T> B = tb ? Padded<T>(s.N, s.K, 0, 2) : Padded<T>(s.K, s.N, 0, 2);
            const Padded<T> C0(s.M, s.N, 0, 3);
            const auto run = [&] {
                Padded<T> C = C0;
                simmim::kernels::gemm<T>(ta, tb, s.M, s.N, s.K, T(0.75), A.data.data(), A.ld, B.data.data(), B.ld,
                                         T(0.5), C.data.data(), C.ld);
                return C.data;
            };
            const std::vector<T> first = run(), second = run();
            CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(T)) == 0);
#ifdef _OPENMP
            if constexpr (std::is_same_v<T, float>) {  // the packed kernel promises thread-count invariance
                const int threads = omp_get_max_threads();
                omp_set_num_threads(1);
                const std::vector<T> single = run();
                omp_set_num_threads(threads);
                CHECK(std::memcmp(first.data(), single.data(), first.size() * sizeof(T)) == 0);
            }
#endif
        }
}

TEST_CASE("gemm rejects bad sizes, leading dimensions and null pointers", "[gemm]") {
    std::vector<float> a(64, 1.0f), b(64, 1.0f), c(64, 0.0f);
    const auto call = [&](bool ta, bool tb, Index M, Index N, Index K, Index lda, Index ldb, Index ldc,
                          const float* A, const float* B, float* C) {
        simmim::kernels::gemm<float>(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
    };
    CHECK_THROWS_WITH(call(false, false, -1, 2, 2, 2, 2, 2, a.data(), b.data(), c.data()),
                      Catch::Contains("non-negative"));
    CHECK_THROWS_WITH(call(false, false, 2, 2, 3, 2, 2, 2, a.data(), b.data(), c.data()), Catch::Contains("lda = 2"));
    CHECK_THROWS_WITH(call(true, false, 4, 2, 3, 3, 2, 2, a.data(), b.data(), c.data()), Catch::Contains("lda = 3"));
    CHECK_THROWS_WITH(call(false, false, 2, 4, 3, 3, 3, 4, a.data(), b.data(), c.data()), Catch::Contains("ldb = 3"));
    CHECK_THROWS_WITH(call(false, true, 2, 4, 3, 3, 2, 4, a.data(), b.data(), c.data()), Catch::Contains("ldb = 2"));
    CHECK_THROWS_WITH(call(false, false, 2, 4, 3, 3, 4, 3, a.data(), b.data(), c.data()), Catch::Contains("ldc = 3"));
    CHECK_THROWS_WITH(call(false, false, 2, 4, 3, 3, 4, 4, a.data(), b.data(), nullptr), Catch::Contains("C is null"));
    CHECK_THROWS_WITH(call(false, false, 2, 4, 3, 3, 4, 4, nullptr, b.data(), c.data()), Catch::Contains("A is null"));
    CHECK_THROWS_AS(call(false, false, 2, 4, 3, 3, 4, 4, a.data(), nullptr, c.data()), std::runtime_error);
}
