// simmim/data/cifar.hpp: CIFAR-10 and CIFAR-100 in their binary distribution format.
//
// CIFAR-10: data_batch_1.bin .. data_batch_5.bin (train) and test_batch.bin, records of
// 1 label byte + 3072 pixel bytes. CIFAR-100: train.bin and test.bin, records of 2 label bytes
// (coarse, fine; the fine label is used) + 3072 pixel bytes. Pixels are stored planar (3, 32, 32)
// in the files and converted to interleaved (32, 32, 3) at load time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "simmim/data/dataset.hpp"

namespace simmim::data {

class CifarDataset final : public Dataset {
public:
    static constexpr int kSide = 32;
    static constexpr std::size_t kPixelBytes = 3 * kSide * kSide;  // 3072

    /// Loads every record of the split into memory. `which` is 10 or 100. DataError on a missing
    /// file, a truncated record (naming file and record index) or a label out of range. Before
    /// reading a file it checks that the process can get the memory it needs (the file, plus the
    /// decoded records so far and its own): DataError naming the file, the bytes needed and the bytes
    /// available otherwise; a std::bad_alloc while loading also becomes a DataError naming the file.
    CifarDataset(const std::filesystem::path& dir, bool train, int which = 10) : dir_(dir), train_(train), which_(which) {
        if (which != 10 && which != 100)
            throw DataError("CIFAR " + dir.string() + ": which must be 10 or 100, found " + std::to_string(which));
        std::vector<std::string> files;
        if (which == 10) {
            if (train)
                for (int i = 1; i <= 5; ++i) files.push_back("data_batch_" + std::to_string(i) + ".bin");
            else
                files.push_back("test_batch.bin");
        } else {
            files.push_back(train ? "train.bin" : "test.bin");
        }
        for (const auto& file : files) detail::rethrow_out_of_memory((dir / file).string(), [&] { load_file(dir / file); });
    }

    std::size_t size() const override { return labels_.size(); }

    RawImage get(std::size_t index) const override {
        detail::check_index(index, labels_.size(), description());
        RawImage image;
        image.width = kSide;
        image.height = kSide;
        image.channels = 3;
        image.pixels.assign(pixels_.begin() + static_cast<std::ptrdiff_t>(index * kPixelBytes),
                            pixels_.begin() + static_cast<std::ptrdiff_t>((index + 1) * kPixelBytes));
        image.label = labels_[index];
        return image;
    }

    std::string description() const override {
        return "CIFAR-" + std::to_string(which_) + " " + dir_.string() + " (" + (train_ ? "train" : "test") + ", " +
               std::to_string(labels_.size()) + " images 32x32x3, " + std::to_string(which_) + " classes)";
    }

    int num_classes() const override { return which_; }

private:
    void load_file(const std::filesystem::path& path) {
        const std::size_t label_bytes = which_ == 10 ? 1 : 2;
        const std::size_t record = label_bytes + kPixelBytes;
        std::error_code ec;
        if (const auto file_size = std::filesystem::file_size(path, ec); !ec) {
            // the file, and the (N, 32, 32, 3) pixels and labels of the records so far and of this file
            // (a resize may hold the old and the new buffer at once)
            const std::uint64_t records = labels_.size() + file_size / record;
            detail::require_memory(path.string(), file_size + labels_.size() * (kPixelBytes + sizeof(int)) +
                                                      records * (kPixelBytes + sizeof(int)));
        }
        const std::vector<std::uint8_t> bytes = detail::read_file(path);
        if (bytes.empty()) throw DataError(path.string() + ": file is empty, expected records of " + std::to_string(record) + " bytes");
        const std::size_t records = bytes.size() / record;
        if (bytes.size() % record != 0)
            throw DataError(path.string() + ": record " + std::to_string(records) + " is truncated: expected " +
                            std::to_string(record) + " bytes, found " + std::to_string(bytes.size() % record));
        const std::size_t first = labels_.size();
        labels_.resize(first + records);
        pixels_.resize((first + records) * kPixelBytes);
        constexpr std::size_t plane = kSide * kSide;
        for (std::size_t r = 0; r < records; ++r) {
            const std::uint8_t* rec = bytes.data() + r * record;
            const int label = rec[label_bytes - 1];  // CIFAR-100: the fine label is the second byte
            if (label >= which_)
                throw DataError(path.string() + ": record " + std::to_string(r) + " has label " + std::to_string(label) +
                                ", expected 0.." + std::to_string(which_ - 1));
            labels_[first + r] = label;
            const std::uint8_t* chw = rec + label_bytes;                           // (3, 32, 32)
            std::uint8_t* hwc = pixels_.data() + (first + r) * kPixelBytes;        // (32, 32, 3)
            for (std::size_t p = 0; p < plane; ++p)
                for (std::size_t c = 0; c < 3; ++c) hwc[p * 3 + c] = chw[c * plane + p];
        }
    }

    std::filesystem::path dir_;
    bool train_;
    int which_;
    std::vector<int> labels_;           // (N)
    std::vector<std::uint8_t> pixels_;  // (N, 32, 32, 3)
};

}  // namespace simmim::data
