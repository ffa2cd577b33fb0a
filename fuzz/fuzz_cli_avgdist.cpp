// fuzz/fuzz_cli_avgdist.cpp: libFuzzer target: simmim_avgdist's parse step (examples/avgdist_options.hpp) on an argv
// made of the input split at newlines. Oracles: simmim::fuzz::cli_avgdist_input in fuzz_cli.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_cli.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::cli_avgdist_input(data, size);
    return 0;
}
