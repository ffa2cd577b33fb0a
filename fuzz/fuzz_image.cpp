// fuzz/fuzz_image.cpp: libFuzzer target: ImageFolderDataset + libjpeg-turbo / libpng decoding + the pretraining augmentation.
// Input layout, accepted errors and oracles: simmim::fuzz::image_input in fuzz_targets.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    simmim::fuzz::image_input(data, size);
    return 0;
}
