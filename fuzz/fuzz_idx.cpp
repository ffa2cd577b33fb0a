// fuzz/fuzz_idx.cpp: libFuzzer target: simmim::data::IdxDataset (MNIST / Fashion-MNIST IDX, plain or gzip).
// Input layout, accepted errors and oracles: simmim::fuzz::idx_input in fuzz_targets.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::idx_input(data, size);
    return 0;
}
