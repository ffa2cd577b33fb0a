// examples/cli_checks.hpp: CLI11 validators for the option values of the example programs.
//
// CLI11 2.1's own CLI::Range, CLI::PositiveNumber and CLI::NonNegativeNumber let NaN through (every
// comparison with NaN is false) and print the double range in full ("0.000000 to 17976931348623157...");
// the number validators here read the value as CLI11 will (CLI::detail::lexical_cast into the option's
// type), refuse NaN and the infinities, and say what is expected:
//   "--base-lr: must be a finite number > 0, not 'nan'".
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>

#include "simmim/core/config.hpp"
#include "simmim/core/swin_config.hpp"

namespace simmim::examples::checks {

namespace detail {

inline std::string number_text(long double x) {
    std::ostringstream out;
    out.precision(15);
    out << static_cast<double>(x);
    return out.str();
}

/// A value of type T (an integer or floating-point option) for which `ok` holds; `condition` is
/// the text after "must be a finite number" / "must be an integer" (and, without spaces, the help's).
template <class T>
CLI::Validator number(std::function<bool(long double)> ok, const std::string& condition) {
    static_assert(std::is_arithmetic_v<T>);
    const std::string kind = std::is_integral_v<T> ? "an integer" : "a finite number";
    return CLI::Validator(
        [ok = std::move(ok), kind, condition](std::string& input) -> std::string {
            T value{};
            const bool read = CLI::detail::lexical_cast(input, value);
            bool good = read;
            if constexpr (std::is_floating_point_v<T>) good = good && std::isfinite(value);
            good = good && ok(static_cast<long double>(value));
            return good ? std::string() : "must be " + kind + " " + condition + ", not '" + input + "'";
        },
        [&] {
            std::string brief = condition;
            std::erase(brief, ' ');
            return brief;
        }());
}

}  // namespace detail

/// A number > lo (doubles: finite).
template <class T>
CLI::Validator greater_than(long double lo) {
    return detail::number<T>([lo](long double v) { return v > lo; }, "> " + detail::number_text(lo));
}

/// A number >= lo (doubles: finite).
template <class T>
CLI::Validator at_least(long double lo) {
    return detail::number<T>([lo](long double v) { return v >= lo; }, ">= " + detail::number_text(lo));
}

/// A number in an interval; `bounds` is "[]", "[)", "(]" or "()" (closed or open at either end).
template <class T>
CLI::Validator in_range(long double lo, long double hi, const char (&bounds)[3]) {
    const bool lo_open = bounds[0] == '(', hi_open = bounds[1] == ')';
    return detail::number<T>(
        [=](long double v) { return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi); },
        std::string("in ") + bounds[0] + detail::number_text(lo) + ", " + detail::number_text(hi) + bounds[1]);
}

/// --data: "fashion-mnist" (the Debian package) or an existing directory.
inline CLI::Validator dataset() {
    return CLI::Validator(
        [](std::string& input) -> std::string {
            std::error_code ec;
            if (input == "fashion-mnist" || std::filesystem::is_directory(input, ec)) return {};
            return "no such directory: " + input + " (give a directory or 'fashion-mnist')";
        },
        "fashion-mnist|DIR");
}

/// --model: the name of a preset (presets::all, ViT, or presets::swin_all, Swin) that `offered` accepts
/// (given the preset's geometry); `not_offered` says which presets the program is built for when it refuses one.
inline CLI::Validator preset(std::function<bool(const EncoderGeometry&)> offered = {}, std::string not_offered = {}) {
    return CLI::Validator(
        [offered = std::move(offered), not_offered = std::move(not_offered)](std::string& input) -> std::string {
            std::string names;
            bool known = false;
            auto visit = [&](std::string_view name, const EncoderGeometry& g) {
                known = known || name == input;
                if (offered && !offered(g)) return false;
                if (name == input) return true;
                names += (names.empty() ? "" : ", ") + std::string(name);
                return false;
            };
            for (const auto& p : presets::all)
                if (visit(p.name, p.config.geometry())) return {};
            for (const auto& p : presets::swin_all)
                if (visit(p.name, p.config.geometry())) return {};
            if (known) return not_offered + ", not " + input;
            return "unknown model preset '" + input + "' (one of " + names + ")";
        },
        "PRESET");
}

}  // namespace simmim::examples::checks
