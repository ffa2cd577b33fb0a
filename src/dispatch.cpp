// src/dispatch.cpp: the run-time choice of simmim::kernels (kernels/dispatch.hpp). Compiled with the library's
// baseline flags: it holds the baseline kernels and the float and double instantiations of the public entry points
// (kernels::gemm, ops::attention_*_fused, ops::attention_bias_*), which call the chosen table.
// Eigen and xsimd get names of their own in this object (as in src/isa_*.cpp): the library is compiled with other
// flags than its users (-march, Eigen's alignment), and a template instantiation shared with a user's translation
// unit could mix the two (seen: Eigen's AVX-512 double packing writing into this object's 16-byte-aligned blocks).
#define Eigen simmim_eigen_baseline
#define xsimd simmim_xsimd_baseline
#define SIMMIM_EXTERN_KERNELS 1
#define SIMMIM_BUILDING_KERNELS 1
#define SIMMIM_KERNELS_DISPATCHER 1
#include "isa_prelude.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/kernels/gemm.hpp"
#include "simmim/ops/attention_bias.hpp"
#include "simmim/ops/attention_fused.hpp"
#include "simmim/ops/fused.hpp"

namespace simmim::kernels::dispatch {
namespace detail {
const Kernels<double> baseline_f64 = {
    &gemm_detail::gemm_entry<double>, &ops::fused_attention_detail::forward_entry<double>,
    &ops::fused_attention_detail::backward_entry<double>, &ops::attention_bias_detail::forward_entry<double>,
    &ops::attention_bias_detail::backward_entry<double>, &ops::gelu_rows::bias_gelu_tile<double>,
    &ops::gelu_rows::gelu_backward_tile<double>};
extern const Table baseline_table;
const Table baseline_table = SIMMIM_KERNELS_TABLE("baseline");
}  // namespace detail

namespace {

struct Level {
    const Table* table;
    bool (*runs_here)();
};

#if SIMMIM_KERNELS_MULTI_ISA
bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("sse4.2");
}
bool cpu_has_avx512() {
    // libgcc's CPU model also checks that the OS saves the AVX-512 state (XCR0) before it reports these.
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512cd");
}
#endif
bool always() { return true; }

/// Best first.
std::vector<Level> levels() {
    return {
#if SIMMIM_KERNELS_MULTI_ISA
        {&detail::avx512_table, &cpu_has_avx512},
        {&detail::avx2_table, &cpu_has_avx2},
#endif
        {&detail::baseline_table, &always},
    };
}

std::string level_names() {
    std::string names;
    for (const Level& l : levels()) names += (names.empty() ? "" : ", ") + std::string(l.table->name);
    return names;
}

/// The best level the CPU runs, capped by SIMMIM_ISA.
const Table* choose() {
    const char* cap = std::getenv("SIMMIM_ISA");
    const std::vector<Level> all = levels();
    std::size_t first = 0;
    if (cap != nullptr && *cap != '\0') {
        const std::string want(cap);
        first = all.size();
        for (std::size_t i = 0; i < all.size(); ++i)
            if (want == all[i].table->name) first = i;
        if (first == all.size())
            throw std::runtime_error("SIMMIM_ISA=" + want + ": expected one of " + level_names() +
                                     " (the best the CPU runs at most this level)");
    }
    for (std::size_t i = first; i < all.size(); ++i)
        if (all[i].runs_here()) return all[i].table;
    return &detail::baseline_table;
}

std::atomic<const Table*> g_active{nullptr};

}  // namespace

const Table& active() {
    const Table* t = g_active.load(std::memory_order_acquire);
    if (t == nullptr) {
        const Table* chosen = choose();  // throws on a bad SIMMIM_ISA, every time
        const Table* expected = nullptr;
        g_active.compare_exchange_strong(expected, chosen, std::memory_order_acq_rel);
        t = g_active.load(std::memory_order_acquire);
    }
    return *t;
}

template <>
const Kernels<float>& kernels<float>() {
    return active().f32;
}
template <>
const Kernels<double>& kernels<double>() {
    return *active().f64;
}

std::vector<std::string> available() {
    std::vector<std::string> names;
    for (const Level& l : levels())
        if (l.runs_here()) names.emplace_back(l.table->name);
    return names;
}

std::string select(const std::string& name) {
    for (const Level& l : levels()) {
        if (name != l.table->name) continue;
        if (!l.runs_here()) throw std::runtime_error("simmim::kernels::dispatch::select: this CPU cannot run " + name);
        const std::string previous = active().name;
        g_active.store(l.table, std::memory_order_release);
        return previous;
    }
    throw std::runtime_error("simmim::kernels::dispatch::select: no level " + name + " in this build (it has " +
                             level_names() + ")");
}

}  // namespace simmim::kernels::dispatch

namespace simmim::kernels {
SIMMIM_GEMM_INSTANTIATION(, float)
SIMMIM_GEMM_INSTANTIATION(, double)
}  // namespace simmim::kernels
namespace simmim::ops {
SIMMIM_ATTENTION_FUSED_INSTANTIATION(, float)
SIMMIM_ATTENTION_FUSED_INSTANTIATION(, double)
SIMMIM_ATTENTION_BIAS_INSTANTIATION(, float)
SIMMIM_ATTENTION_BIAS_INSTANTIATION(, double)
}  // namespace simmim::ops
