// tests/gradcheck.hpp: central finite differences, the independent oracle of every backward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <vector>

#include "simmim/core/random.hpp"

namespace simmim::test {

/// d f / d x[i] for every i in [0, n), by central differences; f reads x (which is perturbed in place).
inline std::vector<double> numeric_gradient(double* x, std::size_t n, const std::function<double()>& f, double h = 1e-6) {
    std::vector<double> g(n);
    for (std::size_t i = 0; i < n; ++i) {
        const double saved = x[i];
        x[i] = saved + h;
        const double fp = f();
        x[i] = saved - h;
        const double fm = f();
        x[i] = saved;
        g[i] = (fp - fm) / (2 * h);
    }
    return g;
}

/// ||a - b|| / max(||b||, floor): the relative L2 error used by every numeric check.
template <class A, class B>
double relative_error(const A& a, const B& b, std::size_t n, double floor = 1e-12) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double d = double(a[i]) - double(b[i]);
        num += d * d;
        den += double(b[i]) * double(b[i]);
    }
    return std::sqrt(num) / std::max(std::sqrt(den), floor);
}

inline std::vector<double> random_vector(std::size_t n, std::uint64_t seed, double scale = 1.0) {
    Rng rng(seed);
    std::vector<double> v(n);
    for (auto& x : v) x = rng.normal() * scale;
    return v;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

}  // namespace simmim::test
