#!/usr/bin/env bash
# Each impossible ViTConfig, and each impossible masking for a valid one, must fail to compile with its
# readable static_assert message.
# Usage: static_asserts.sh <build dir> <source dir>
set -u
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
cxx=${CXX:-c++}
fail=0
check() {  # check "<ViTConfig initialiser>" "<MaskSpec initialiser>" "<expected message part>"
    local out
    out=$(printf '#include <simmim/simmim.hpp>\nconstexpr simmim::ViTConfig kBad{%s};\nconstexpr simmim::MaskSpec kMask{%s};\nsimmim::ViTSimMIM<float, kBad>* p = nullptr;\nstatic_assert(simmim::ValidConfig<kBad>::value);\nauto policy = simmim::random_mask_patch<kBad, kMask>();\n' "$1" "$2" |
          "$cxx" -std=c++20 -fsyntax-only -fopenmp -I"$src/include" -I/usr/include/eigen3 -x c++ - 2>&1)
    if [ $? -eq 0 ]; then echo "FAIL: {$1} {$2} compiled"; fail=1;
    elif ! grep -q "$3" <<<"$out"; then echo "FAIL: {$1} {$2} failed without the message '$3'"; fail=1;
    else echo "ok: {$1} {$2} -> $3"; fi
}
# the encoder's configuration
check "30, 3, 4, 192, 12, 3, 4"  "8, 0.6"  "image_size must be a multiple of patch_size"
check "32, 3, 4, 190, 12, 3, 4"  "8, 0.6"  "embed_dim must be a multiple of num_heads"
# the masking policy's parameters, checked where the policy is made for the encoder
check "32, 3, 4, 192, 12, 3, 4"  "6, 0.6"  "mask patch size must be a multiple of the encoder's mask-grid cell"
check "40, 3, 4, 192, 12, 3, 4"  "16, 0.6" "the mask patch size must divide the image size"
check "32, 3, 4, 192, 12, 3, 4"  "8, 1.0"  "the mask ratio must lie in (0, 1)"
check "32, 3, 4, 192, 12, 3, 4"  "8, 0.0"  "the mask ratio must lie in (0, 1)"
# and a valid one compiles
if printf '#include <simmim/simmim.hpp>\nstatic_assert(simmim::ValidConfig<simmim::presets::vit_t4_32>::value);\n' |
   "$cxx" -std=c++20 -fsyntax-only -fopenmp -I"$src/include" -I/usr/include/eigen3 -x c++ -; then echo "ok: a valid preset compiles"; else echo "FAIL: valid preset"; fail=1; fi
[ $fail -eq 0 ] && echo "7 passed, 0 failed" || echo "static_assert checks failed"
exit $fail
