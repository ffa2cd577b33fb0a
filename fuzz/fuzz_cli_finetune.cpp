// fuzz/fuzz_cli_finetune.cpp: libFuzzer target: simmim_finetune's parse step (examples/finetune_options.hpp) on an argv
// made of the input split at newlines. Oracles: simmim::fuzz::cli_finetune_input in fuzz_cli.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_cli.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::cli_finetune_input(data, size);
    return 0;
}
