// fuzz/fuzz_checkpoint.cpp: libFuzzer target: simmim::io::load_checkpoint (the --resume path) on arbitrary bytes.
// Input layout, accepted errors and oracles: simmim::fuzz::checkpoint_input in fuzz_targets.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::checkpoint_input(data, size);
    return 0;
}
