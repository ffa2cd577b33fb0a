// simmim/kernels/dispatch.hpp: run-time choice of the instruction set of the heavy kernels, for programs linking
// the compiled kernels library simmim::kernels (CMake; it defines SIMMIM_EXTERN_KERNELS for them).
//
// simmim::kernels compiles the float GEMM (kernels/gemm.hpp) and the fused and biased attention
// (ops/attention_fused.hpp, ops/attention_bias.hpp) and the GELU epilogues of the fused MLP (ops/fused.hpp) once
// per instruction set: "avx512" (AVX-512 F/BW/DQ/VL/CD with
// AVX2, FMA) and "avx2" (AVX2 + FMA) on x86-64 with GCC or Clang, and "baseline" (the library's own flags, e.g.
// SSE2 by default; the only level elsewhere, and the double-precision kernels of every level). At the first kernel call it picks the
// best one the CPU supports, capped by the environment variable SIMMIM_ISA (avx512, avx2 or baseline; CI runs the
// kernel tests once per level). Each level's results are bit-identical to a header-only build compiled for that
// level. The other element-wise ops (LayerNorm, AdamW, ...) are not dispatched: they keep the program's flags.
// A header-only program (no simmim::kernels) compiles every kernel for its own flags; kernels::kernel_path()
// (kernels/gemm.hpp) says which case a program is in.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "simmim/kernels/gemm_epilogue.hpp"

namespace simmim::kernels::dispatch {

/// One instruction set's entry points for scalar type T (the bodies of kernels::gemm and ops::attention_*).
template <class T>
struct Kernels {
    void (*gemm)(bool, bool, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t, T, const T*, std::ptrdiff_t, const T*,
                 std::ptrdiff_t, T, T*, std::ptrdiff_t, const GemmEpilogue<T>*);
    void (*attention_forward_fused)(T*, T*, const T*, int, int, int, int);
    void (*attention_backward_fused)(T*, const T*, const T*, const T*, const T*, int, int, int, int);
    void (*attention_bias_forward)(T*, T*, const T*, const T*, int, int, int, int, const T*, int);
    void (*attention_bias_backward)(T*, T*, const T*, const T*, const T*, const T*, const T*, int, int, int, int,
                                    const T*, int);
    // the GELU epilogues of the fused MLP (ops/fused.hpp, ops::gelu_rows)
    void (*bias_gelu_tile)(T*, std::ptrdiff_t, T*, std::ptrdiff_t, const T*, std::ptrdiff_t, std::ptrdiff_t);
    void (*gelu_backward_tile)(T*, std::ptrdiff_t, const T*, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t);
};

/// The kernels of one instruction set.
struct Table {
    const char* name;        ///< "avx512", "avx2" or "baseline"
    const char* gemm_path;   ///< its float GEMM: "avx512", "avx2" or "portable" (Eigen)
    Kernels<float> f32;
    const Kernels<double>* f64;  ///< the baseline's at every level (double serves tests and gradient checks)
};

// Defined in simmim::kernels (src/dispatch.cpp).

/// The table in use: chosen at the first call (the best the CPU supports, capped by SIMMIM_ISA), or by select().
/// Throws std::runtime_error naming the accepted values when SIMMIM_ISA is set to something else.
const Table& active();
/// active().f32 or active().f64.
template <class T>
const Kernels<T>& kernels();
/// The levels this build has and this CPU runs, best first (e.g. {"avx512", "avx2", "baseline"}).
std::vector<std::string> available();
/// Uses the named level from now on (tests, benchmarks; not while kernels run on other threads) and returns the
/// previous one's name. Throws std::runtime_error if the build lacks it or the CPU cannot run it.
std::string select(const std::string& name);

}  // namespace simmim::kernels::dispatch
