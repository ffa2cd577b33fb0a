// simmim/model/swin_resample.hpp: transfer of a Swin relative position bias table to another window
// size (e.g. pretraining window 6 -> fine-tuning window 7), exactly as SimMIM fine-tuning does it.
//
// The official code (microsoft/SimMIM, utils.py, `load_pretrained` -> `remap_pretrained_keys_swin`,
// taken from BEiT) does NOT resize the table bicubically on a uniform grid. For a table of
// src^2 rows (src = 2*w1 - 1) and nH heads going to dst^2 rows (dst = 2*w2 - 1) it
//   1. finds a ratio q by bisection such that 1 + q + ... + q^(src/2 - 1) = dst/2
//      (swin_geometric_ratio below, the loop replicated operation for operation);
//   2. places the src relative offsets of each axis at geometrically spaced coordinates
//      x = y = [-dis reversed, 0, dis], dis = [1, 1+q, 1+q+q^2, ...] (swin_geometric_coordinates), so
//      that the outermost source offset src/2 lands at dst/2 and the offsets near 0 stay near their
//      integer positions;
//   3. per head, fits `scipy.interpolate.interp2d(x, y, z, kind='cubic')` to z = table[:, h] viewed
//      as (src, src) and evaluates it at the integer offsets -dst/2 .. dst/2 of both axes.
//
// interp2d with kind='cubic' on a rectangular grid is FITPACK's `regrid` with s = 0: the bicubic
// tensor-product spline that interpolates the grid, with interior knots at the data points except the
// second and the second-to-last. No knot there means the third derivative is continuous at those
// points, i.e. along each axis it is the "not-a-knot" interpolating cubic spline, and the 2-D
// interpolant is the tensor product of the 1-D ones (rows interpolated along x, then the results'
// columns along y; the two orders give the same result). FITPACK's evaluator clamps arguments to the
// data range, so targets beyond the outermost coordinate (only possible when q is pinned at 1.5,
// e.g. window 3 -> 5) take the boundary value of the spline. interp2d was removed in SciPy 1.14;
// its exact replacement is `RectBivariateSpline(x, y, z.T, kx=3, ky=3, s=0)(dx, dy).T`. Because the
// source and target coordinates are the same on both axes, the orientation (interp2d's x is the
// column index) does not change the result; this code treats table row r, column c of the (src, src)
// view as (y = x[r], x = x[c]), as interp2d does.
//
// Precision. The official code interpolates `table.float()` (float32) in FITPACK's double precision
// and stores the result as float32. Here everything is computed in double:
//   * the double overload returns the float64 spline of the given table; it agrees with SciPy's
//     float64 interp2d / RectBivariateSpline to ~1e-15 (tests/test_swin_resample.cpp, fixture
//     tests/fixtures/swin_resample.safetensors); for N(0, 1) tables it differs from the official
//     float32 result by up to ~2.3e-7 (the float32 rounding of input and output);
//   * the float overload rounds the double result to float, which is the official pipeline
//     (float32 input, double spline, float32 output); on the fixture it reproduces the official
//     float32 tables bit for bit.
//
// Only the standard library is used.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace simmim {

/// Largest window accepted by the table transfer (a table side of 2 * 256 - 1 = 511); a sanity limit
/// that keeps the dense O(side^3) spline set-up fast. Real Swin windows are 6 to 24.
inline constexpr int swin_resample_max_window = 256;

namespace detail {
inline void swin_resample_check_side(int side, const char* what, int min_side) {
    if (side < min_side || side % 2 == 0 || side > 2 * swin_resample_max_window - 1) {
        throw std::invalid_argument(std::string("swin_geometric_ratio: ") + what + " table side " + std::to_string(side) +
                                    " must be odd (2 * window - 1) and in [" + std::to_string(min_side) + ", " +
                                    std::to_string(2 * swin_resample_max_window - 1) + "]");
    }
}
}  // namespace detail

/// The ratio q of the geometric source coordinates, for table sides src = 2*w1 - 1 and dst = 2*w2 - 1,
/// computed exactly as microsoft/SimMIM utils.py `remap_pretrained_keys_swin` does:
///
///     left, right = 1.01, 1.5
///     while right - left > 1e-6:
///         q = (left + right) / 2.0
///         gp = (1.0 - q ** (src // 2)) / (1.0 - q)      # geometric_progression(1, q, src // 2)
///         if gp > dst // 2: right = q
///         else: left = q
///
/// q is the LAST MIDPOINT the loop computed (not the final left, right or their mean): 19 halvings of
/// [1.01, 1.5], so q is within ~1e-6 of the root of sum_{k < src/2} q^k = dst/2. Window 6 -> 7
/// (11 -> 13) gives 1.0912812995910643, 12 -> 14 (23 -> 27) gives 1.0328930473327635.
/// When the root is outside [1.01, 1.5] the official loop silently converges to the bracket end and so
/// does this: shrinking a window (7 -> 6 gives 1.01000093...) or growing it by a lot (3 -> 5 gives
/// 1.49999906...).
/// Throws std::invalid_argument unless src and dst are odd, src >= 3, dst >= 1 and both sides are at
/// most 2 * swin_resample_max_window - 1.
inline double swin_geometric_ratio(int src, int dst) {
    detail::swin_resample_check_side(src, "source", 3);
    detail::swin_resample_check_side(dst, "target", 1);
    const double n = static_cast<double>(src / 2);   // Python float ** int is C pow(double, double)
    const double target = static_cast<double>(dst / 2);
    double left = 1.01, right = 1.5, q = 0.0;
    while (right - left > 1e-6) {
        q = (left + right) / 2.0;
        const double gp = (1.0 - std::pow(q, n)) / (1.0 - q);
        if (gp > target) {
            right = q;
        } else {
            left = q;
        }
    }
    return q;
}

/// The src source coordinates of one axis, x = y = [-dis[k-1], ..., -dis[0], 0, dis[0], ..., dis[k-1]]
/// with k = src / 2, dis[0] = 1 and dis[i] = dis[i-1] + q^i (q = swin_geometric_ratio(src, dst)),
/// accumulated in this order as the official `cur += q ** (i + 1)` loop does. Same errors as
/// swin_geometric_ratio.
inline std::vector<double> swin_geometric_coordinates(int src, int dst) {
    const double q = swin_geometric_ratio(src, dst);
    const int k = src / 2;
    std::vector<double> dis;
    dis.reserve(static_cast<std::size_t>(k));
    double cur = 1.0;
    for (int i = 0; i < k; ++i) {
        dis.push_back(cur);
        cur += std::pow(q, static_cast<double>(i + 1));
    }
    std::vector<double> x;
    x.reserve(static_cast<std::size_t>(src));
    for (int i = k - 1; i >= 0; --i) x.push_back(-dis[static_cast<std::size_t>(i)]);
    x.push_back(0.0);
    x.insert(x.end(), dis.begin(), dis.end());
    return x;
}

/// The linear map of the 1-D not-a-knot interpolating cubic spline: W (targets.size() x nodes.size(),
/// row-major) such that the spline through (nodes[j], values[j]) takes the value
/// sum_j W[t * n + j] * values[j] at targets[t]. This is SciPy's `CubicSpline(nodes, values,
/// bc_type='not-a-knot')` and, along each axis, FITPACK's s = 0 interpolating spline (see the file
/// comment). Targets outside [nodes.front(), nodes.back()] are clamped to the range (FITPACK's
/// evaluator does the same), so the spline is never extrapolated.
///
/// Method: the second derivatives M_j solve A M = B values, with the interior rows
///   h[i-1] M[i-1] + 2 (h[i-1] + h[i]) M[i] + h[i] M[i+1] = 6 ((y[i+1]-y[i]) / h[i] - (y[i]-y[i-1]) / h[i-1])
/// (h[i] = nodes[i+1] - nodes[i]) and the not-a-knot rows (third derivative continuous at nodes[1]
/// and nodes[n-2]) h[1] M[0] - (h[0] + h[1]) M[1] + h[0] M[2] = 0 and its mirror; A is solved densely
/// with partial pivoting for the n right-hand sides B (n is small: a table side). On [x_i, x_{i+1}]
/// with a = (x_{i+1} - t) / h, b = 1 - a:
///   S(t) = a y_i + b y_{i+1} + ((a^3 - a) M_i + (b^3 - b) M_{i+1}) h^2 / 6.
/// Throws std::invalid_argument if there are fewer than 4 nodes, a node or target is not finite, or
/// the nodes are not strictly increasing.
inline std::vector<double> not_a_knot_cubic_weights(std::span<const double> nodes, std::span<const double> targets) {
    const std::size_t n = nodes.size();
    if (n < 4) {
        throw std::invalid_argument("not_a_knot_cubic_weights: a not-a-knot cubic spline needs at least 4 nodes, got " +
                                    std::to_string(n));
    }
    for (std::size_t i = 0; i < n; ++i) {
        if (!std::isfinite(nodes[i]) || (i > 0 && !(nodes[i] > nodes[i - 1]))) {
            throw std::invalid_argument("not_a_knot_cubic_weights: nodes must be finite and strictly increasing (node " +
                                        std::to_string(i) + ")");
        }
    }
    for (std::size_t t = 0; t < targets.size(); ++t) {
        if (!std::isfinite(targets[t])) {
            throw std::invalid_argument("not_a_knot_cubic_weights: target " + std::to_string(t) + " is not finite");
        }
    }
    std::vector<double> h(n - 1);
    for (std::size_t i = 0; i + 1 < n; ++i) h[i] = nodes[i + 1] - nodes[i];

    // A (n x n) and B (n x n), row-major; G = A^{-1} B maps the values to the second derivatives.
    std::vector<double> A(n * n, 0.0), G(n * n, 0.0);
    const auto a = [&](std::size_t r, std::size_t c) -> double& { return A[r * n + c]; };
    const auto g = [&](std::size_t r, std::size_t c) -> double& { return G[r * n + c]; };
    a(0, 0) = h[1];
    a(0, 1) = -(h[0] + h[1]);
    a(0, 2) = h[0];
    for (std::size_t i = 1; i + 1 < n; ++i) {
        a(i, i - 1) = h[i - 1];
        a(i, i) = 2.0 * (h[i - 1] + h[i]);
        a(i, i + 1) = h[i];
        g(i, i - 1) = 6.0 / h[i - 1];
        g(i, i) = -6.0 / h[i - 1] - 6.0 / h[i];
        g(i, i + 1) = 6.0 / h[i];
    }
    a(n - 1, n - 3) = h[n - 2];
    a(n - 1, n - 2) = -(h[n - 3] + h[n - 2]);
    a(n - 1, n - 1) = h[n - 3];

    // Gaussian elimination with partial pivoting on [A | B], then back substitution: G = A^{-1} B.
    for (std::size_t k = 0; k < n; ++k) {
        std::size_t pivot = k;
        for (std::size_t r = k + 1; r < n; ++r) {
            if (std::abs(a(r, k)) > std::abs(a(pivot, k))) pivot = r;
        }
        if (a(pivot, k) == 0.0) throw std::invalid_argument("not_a_knot_cubic_weights: singular spline system");
        if (pivot != k) {
            for (std::size_t c = 0; c < n; ++c) {
                std::swap(a(k, c), a(pivot, c));
                std::swap(g(k, c), g(pivot, c));
            }
        }
        for (std::size_t r = k + 1; r < n; ++r) {
            const double f = a(r, k) / a(k, k);
            if (f == 0.0) continue;
            for (std::size_t c = k; c < n; ++c) a(r, c) -= f * a(k, c);
            for (std::size_t c = 0; c < n; ++c) g(r, c) -= f * g(k, c);
        }
    }
    for (std::size_t k = n; k-- > 0;) {
        for (std::size_t c = 0; c < n; ++c) {
            double s = g(k, c);
            for (std::size_t j = k + 1; j < n; ++j) s -= a(k, j) * g(j, c);
            g(k, c) = s / a(k, k);
        }
    }

    std::vector<double> W(targets.size() * n, 0.0);
    for (std::size_t t = 0; t < targets.size(); ++t) {
        const double x = std::clamp(targets[t], nodes.front(), nodes.back());
        // interval i: the last node <= x, at most n - 2
        std::size_t i = static_cast<std::size_t>(std::upper_bound(nodes.begin(), nodes.end(), x) - nodes.begin());
        i = std::min(i == 0 ? 0 : i - 1, n - 2);
        const double hi = h[i];
        const double wa = (nodes[i + 1] - x) / hi, wb = (x - nodes[i]) / hi;
        const double ca = (wa * wa * wa - wa) * hi * hi / 6.0, cb = (wb * wb * wb - wb) * hi * hi / 6.0;
        double* row = W.data() + t * n;
        for (std::size_t j = 0; j < n; ++j) row[j] = ca * g(i, j) + cb * g(i + 1, j);
        row[i] += wa;
        row[i + 1] += wb;
    }
    return W;
}

namespace detail {
template <class T>
std::vector<T> resample_relative_position_table(std::span<const T> table, int src_window, int dst_window, int heads) {
    const auto fail = [](const std::string& what) {
        throw std::invalid_argument("resample_relative_position_table: " + what);
    };
    const int max_window = swin_resample_max_window;
    if (src_window < 1 || src_window > max_window || dst_window < 1 || dst_window > max_window) {
        fail("windows must be in [1, " + std::to_string(max_window) + "], got " + std::to_string(src_window) + " -> " +
             std::to_string(dst_window));
    }
    if (heads < 1) fail("heads must be positive, got " + std::to_string(heads));
    const std::size_t src = static_cast<std::size_t>(2 * src_window - 1), dst = static_cast<std::size_t>(2 * dst_window - 1);
    const std::size_t H = static_cast<std::size_t>(heads);
    if (src * src > std::numeric_limits<std::size_t>::max() / H || dst * dst > std::numeric_limits<std::size_t>::max() / H) {
        fail("table size overflows");
    }
    if (table.size() != src * src * H) {
        fail("window " + std::to_string(src_window) + " with " + std::to_string(heads) + " heads needs a table of (" +
             std::to_string(src) + "^2 = " + std::to_string(src * src) + ") x " + std::to_string(heads) + " = " +
             std::to_string(src * src * H) + " values, got " + std::to_string(table.size()));
    }
    if (src_window == dst_window) return std::vector<T>(table.begin(), table.end());
    if (src_window < 3) {
        // a side of 3 gives 3 coordinates per axis: too few for a cubic (interp2d raises as well)
        fail("the cubic transfer needs a source window of at least 3 (table side 5), got " + std::to_string(src_window));
    }

    const std::vector<double> x = swin_geometric_coordinates(static_cast<int>(src), static_cast<int>(dst));
    std::vector<double> targets(dst);
    for (std::size_t i = 0; i < dst; ++i) targets[i] = static_cast<double>(i) - static_cast<double>(dst / 2);
    const std::vector<double> W = not_a_knot_cubic_weights(x, targets);  // dst x src, same on both axes

    std::vector<T> out(dst * dst * H);
    std::vector<double> rows(src * dst);  // each source row (fixed y) interpolated along x
    for (std::size_t head = 0; head < H; ++head) {
        const auto z = [&](std::size_t r, std::size_t c) { return static_cast<double>(table[(r * src + c) * H + head]); };
        for (std::size_t r = 0; r < src; ++r) {
            for (std::size_t c2 = 0; c2 < dst; ++c2) {
                double s = 0.0;
                for (std::size_t c = 0; c < src; ++c) s += W[c2 * src + c] * z(r, c);
                rows[r * dst + c2] = s;
            }
        }
        for (std::size_t r2 = 0; r2 < dst; ++r2) {  // then each resulting column along y
            for (std::size_t c2 = 0; c2 < dst; ++c2) {
                double s = 0.0;
                for (std::size_t r = 0; r < src; ++r) s += W[r2 * src + r] * rows[r * dst + c2];
                out[(r2 * dst + c2) * H + head] = static_cast<T>(s);
            }
        }
    }
    return out;
}
}  // namespace detail

/// The relative position bias table of a Swin window-attention layer transferred from window
/// src_window to dst_window as SimMIM fine-tuning does it (microsoft/SimMIM utils.py
/// `remap_pretrained_keys_swin`; see the file comment): `table` is ((2*src_window-1)^2, heads)
/// row-major, as PyTorch stores `relative_position_bias_table` (row = (dy + w-1) * (2w-1) + (dx + w-1)),
/// the result ((2*dst_window-1)^2, heads) in the same layout. Equal windows return the table
/// unchanged, as the official code leaves it. Computed in double; the result is the float64 SciPy
/// interpolant of the given values (agreement ~1e-15).
/// Throws std::invalid_argument if a window is outside [1, swin_resample_max_window], heads < 1, the
/// table size is not (2*src_window-1)^2 * heads, or the windows differ and src_window < 3.
inline std::vector<double> resample_relative_position_table(std::span<const double> table, int src_window, int dst_window,
                                                            int heads) {
    return detail::resample_relative_position_table<double>(table, src_window, dst_window, heads);
}

/// The float overload: the double computation rounded to float once at the end, which is the
/// official pipeline (`table.float()` interpolated by FITPACK in double, stored as float32).
inline std::vector<float> resample_relative_position_table(std::span<const float> table, int src_window, int dst_window,
                                                           int heads) {
    return detail::resample_relative_position_table<float>(table, src_window, dst_window, heads);
}

}  // namespace simmim
