// fuzz/fuzz_cli_reconstruct.cpp: libFuzzer target: simmim_reconstruct's parse step (examples/reconstruct_options.hpp) on an argv
// made of the input split at newlines. Oracles: simmim::fuzz::cli_reconstruct_input in fuzz_cli.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_cli.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::cli_reconstruct_input(data, size);
    return 0;
}
