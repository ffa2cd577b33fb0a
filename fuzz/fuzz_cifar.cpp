// fuzz/fuzz_cifar.cpp: libFuzzer target: simmim::data::CifarDataset (CIFAR-10 / CIFAR-100 binary batches).
// Input layout, accepted errors and oracles: simmim::fuzz::cifar_input in fuzz_targets.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::cifar_input(data, size);
    return 0;
}
