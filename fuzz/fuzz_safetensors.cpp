// fuzz/fuzz_safetensors.cpp: libFuzzer target: simmim::io::parse_safetensors on arbitrary bytes.
// Input layout, accepted errors and oracles: simmim::fuzz::safetensors_input in fuzz_targets.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::safetensors_input(data, size);
    return 0;
}
