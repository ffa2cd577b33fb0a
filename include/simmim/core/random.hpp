// simmim/core/random.hpp: the project's one source of randomness.
//
// Every random draw in simmim is a pure function of (seed, stream, index): the mask of training
// step s, the augmentation of sample i in epoch e, the order of epoch e. That is what makes
// training resume bit-identically from a checkpoint holding nothing but the step counter.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace simmim {

/// SplitMix64 finaliser: a bijective 64-bit mixer (Steele, Lea, Flood 2014).
constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/// Derive an independent seed from a parent seed and any number of integer keys.
constexpr std::uint64_t derive_seed(std::uint64_t seed) noexcept { return splitmix64(seed); }
template <class... Keys>
constexpr std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t key, Keys... keys) noexcept {
    return derive_seed(splitmix64(seed ^ splitmix64(key + 0x632BE59BD9B4E019ull)), static_cast<std::uint64_t>(keys)...);
}

/// xoshiro256** (Blackman, Vigna): small, fast, and its whole state is four words.
/// Satisfies std::uniform_random_bit_generator.
class Rng {
public:
    using result_type = std::uint64_t;
    explicit constexpr Rng(std::uint64_t seed = 0) noexcept {
        std::uint64_t x = seed;
        for (auto& w : s_) { x = splitmix64(x); w = x; }
    }
    static constexpr result_type min() noexcept { return 0; }
    static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }
    constexpr result_type operator()() noexcept {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
        s_[2] ^= t; s_[3] = rotl(s_[3], 45);
        return result;
    }
    /// Uniform double in [0, 1) with 53 random bits.
    double uniform() noexcept { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }
    /// Uniform double in [lo, hi).
    double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }
    /// Uniform integer in [0, n) (Lemire's multiply-shift; n > 0).
    std::uint64_t below(std::uint64_t n) noexcept {
        return static_cast<std::uint64_t>((static_cast<unsigned __int128>((*this)()) * n) >> 64);
    }
    /// Standard normal (Box-Muller; no cached second value, so the state stays four words).
    double normal() noexcept {
        double u1 = uniform();
        while (u1 <= 0.0) u1 = uniform();
        const double u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
    }
    /// Normal(0, std) truncated to [lo, hi] by rejection (as torch.nn.init.trunc_normal_ bounds).
    double truncated_normal(double std, double lo, double hi) noexcept {
        for (;;) {
            const double v = normal() * std;
            if (v >= lo && v <= hi) return v;
        }
    }

private:
    static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
    std::uint64_t s_[4]{};
};

}  // namespace simmim
