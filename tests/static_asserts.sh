#!/usr/bin/env bash
# Each impossible ViTConfig must fail to compile with its readable static_assert message.
# Usage: static_asserts.sh <build dir> <source dir>
set -u
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
cxx=${CXX:-c++}
fail=0
check() {  # check "<config initialiser>" "<expected message part>"
    local out
    out=$(printf '#include <simmim/simmim.hpp>\nconstexpr simmim::ViTConfig kBad{%s};\nsimmim::ViTSimMIM<float, kBad>* p = nullptr;\nstatic_assert(simmim::ValidConfig<kBad>::value);\n' "$1" |
          "$cxx" -std=c++20 -fsyntax-only -fopenmp -I"$src/include" -I/usr/include/eigen3 -x c++ - 2>&1)
    if [ $? -eq 0 ]; then echo "FAIL: {$1} compiled"; fail=1;
    elif ! grep -q "$2" <<<"$out"; then echo "FAIL: {$1} failed without the message '$2'"; fail=1;
    else echo "ok: {$1} -> $2"; fi
}
check "30, 3, 4, 192, 12, 3, 4, 8, 0.6"  "image_size must be a multiple of patch_size"
check "32, 3, 4, 192, 12, 3, 4, 6, 0.6"  "mask_patch_size must be a multiple of patch_size"
check "40, 3, 4, 192, 12, 3, 4, 16, 0.6" "image_size must be a multiple of mask_patch_size"
check "32, 3, 4, 190, 12, 3, 4, 8, 0.6"  "embed_dim must be a multiple of num_heads"
check "32, 3, 4, 192, 12, 3, 4, 8, 1.0"  "mask_ratio must lie in (0, 1)"
check "32, 3, 4, 192, 12, 3, 4, 8, 0.0"  "mask_ratio must lie in (0, 1)"
# and a valid one compiles
if printf '#include <simmim/simmim.hpp>\nstatic_assert(simmim::ValidConfig<simmim::presets::vit_t4_32>::value);\n' |
   "$cxx" -std=c++20 -fsyntax-only -fopenmp -I"$src/include" -I/usr/include/eigen3 -x c++ -; then echo "ok: a valid preset compiles"; else echo "FAIL: valid preset"; fail=1; fi
[ $fail -eq 0 ] && echo "7 passed, 0 failed" || echo "static_assert checks failed"
exit $fail
