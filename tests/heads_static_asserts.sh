#!/usr/bin/env bash
# Each impossible head / loss / prediction-resolution combination must fail to compile with its readable
# static_assert message (model/linear_head.hpp, mlp_head.hpp, reconstruction_loss.hpp, simmim_model.hpp).
# Usage: heads_static_asserts.sh <build dir> <source dir>
set -u
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
cxx=${CXX:-c++}
fail=0
pass=0
check() {  # check "<type using cfg (vit-tiny-test: 16 px, patch 4, grid 4)>" "<expected message part>"
    local out
    out=$(printf '#include <simmim/simmim.hpp>\nusing namespace simmim;\nconstexpr ViTConfig cfg = presets::vit_tiny_test;\nusing X = %s;\nstatic_assert(sizeof(X) > 0);\n' "$1" |
          "$cxx" -std=c++20 -fsyntax-only -fopenmp -I"$src/include" -isystem /usr/include/eigen3 -x c++ - 2>&1)
    if [ $? -eq 0 ]; then echo "FAIL: $1 compiled"; fail=1;
    elif ! grep -q "$2" <<<"$out"; then echo "FAIL: $1 failed without the message '$2'"; fail=1;
    else echo "ok: $1 -> $2"; pass=$((pass + 1)); fi
}
check "LinearHead<float, cfg, 6>" "head resolution R must be a positive multiple of the encoder's output grid"
check "MLPHead<float, cfg, 32, 12>" "head resolution R must be a positive multiple of the encoder's output grid"
check "ReconstructionLoss<float, cfg, LossSpec{.resolution = 2}>" "loss resolution must be a positive multiple of the encoder's mask grid"
check "ReconstructionLoss<float, cfg, LossSpec{.target = LossTarget::Normalized, .norm_window = 4}>" "must be odd and at least 3"
check "SimMIM<ViTEncoder<float, cfg>, LinearHead<float, cfg, 8>, ReconstructionLoss<float, cfg>, RandomMaskPatch>" \
      "head's prediction size (Head::out_size) and the loss's resolution (Loss::resolution) must agree"
check "SimMIM<ViTEncoder<float, cfg>, LinearHead<float, presets::vit_t4_32>, ReconstructionLoss<float, cfg>, RandomMaskPatch>" \
      "the head was built for another encoder geometry"
check "SimMIM<ViTEncoder<float, cfg>, LinearHead<float, cfg>, MaskedL1Loss<float, EncoderGeometry{16, 3, 2, 4, 32}>, RandomMaskPatch>" \
      "the loss was built for another encoder geometry"
# and a consistent low-resolution model compiles
if printf '#include <simmim/simmim.hpp>\nusing namespace simmim;\nconstexpr ViTConfig cfg = presets::vit_tiny_test;\nusing X = SimMIM<ViTEncoder<float, cfg>, MLPHead<float, cfg, 16, 8>, ReconstructionLoss<float, cfg, LossSpec{.norm = LossNorm::L2, .target = LossTarget::Normalized, .resolution = 8}>, RandomMaskPatch>;\nstatic_assert(X::pred_size == 8);\n' |
   "$cxx" -std=c++20 -fsyntax-only -fopenmp -I"$src/include" -isystem /usr/include/eigen3 -x c++ -; then
    echo "ok: a consistent R = 8 model compiles"; pass=$((pass + 1))
else echo "FAIL: consistent R = 8 model"; fail=1; fi
[ $fail -eq 0 ] && echo "$pass passed, 0 failed" || echo "head/loss static_assert checks failed"
exit $fail
