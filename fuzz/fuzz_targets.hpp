// fuzz/fuzz_targets.hpp: the bodies of the file-format fuzz targets, one function per target, so
// that the libFuzzer binaries (fuzz/fuzz_<target>.cpp) and the regression test
// (tests/test_fuzz_regressions.cpp) run exactly the same code on an input.
//
// Each function takes one input, accepts the error type its API documents (SafetensorsError for
// io/, DataError for data/) and checks an oracle on what loads. Anything else leaves the function:
// OracleFailure for a broken oracle, any other exception for a broken error contract.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fuzz_util.hpp"
#include "simmim/core/random.hpp"
#include "simmim/data/augment.hpp"
#include "simmim/data/cifar.hpp"
#include "simmim/data/idx.hpp"
#include "simmim/data/image_folder.hpp"
#include "simmim/io/checkpoint.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/simmim.hpp"

namespace simmim::fuzz {

/// simmim::io::parse_safetensors on the input. Oracles for a file that parses: the tensors' bytes
/// add up to the data buffer (file size - 8 - header length); serialize then parse gives back the
/// same names (in order), dtypes, shapes, bytes and metadata; every tensor converts to double with
/// numel() elements, and to int64 or throws SafetensorsError.
inline void safetensors_input(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    io::TensorFile file;
    try {
        file = io::parse_safetensors(bytes, "fuzz-input");
    } catch (const io::SafetensorsError&) {
        return;
    }
    std::uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | data[i];
    std::uint64_t tensor_bytes = 0;
    for (const auto& name : file.names()) {
        const io::TensorData& t = file.at(name);
        tensor_bytes += t.bytes.size();
        require(t.bytes.size() == t.numel() * io::dtype_size(t.dtype), "tensor '" + name + "': byte count differs from numel * dtype size");
        require(t.to<double>().size() == t.numel(), "tensor '" + name + "': to<double>() gave the wrong element count");
        try {
            (void)t.to<std::int64_t>();
        } catch (const io::SafetensorsError&) {
        }
    }
    require(tensor_bytes == size - 8 - header_size, "tensors do not tile the data buffer");

    const io::TensorFile again = io::parse_safetensors(io::serialize_safetensors(file), "fuzz-roundtrip");
    require(again.names() == file.names(), "round trip changed the tensor names or their order");
    require(again.metadata == file.metadata, "round trip changed the metadata");
    for (const auto& name : file.names()) {
        const io::TensorData &a = file.at(name), &b = again.at(name);
        require(a.dtype == b.dtype && a.shape == b.shape && a.bytes == b.bytes, "round trip changed tensor '" + name + "'");
    }
}

/// The model fuzz targets load checkpoints into: 8 px, 1 channel, patch 4, dim 8, depth 1, 2 heads,
/// MLP ratio 4, mask patch 4, ratio 0.5 (small, so that inputs are mostly header JSON).
inline constexpr ViTConfig kFuzzCheckpointConfig{8, 1, 4, 8, 1, 2, 4};
constexpr MaskSpec kFuzzCheckpointConfigMask{4, 0.5};

/// simmim::io::load_checkpoint (the --resume path) on the input written to a file. Oracle for a
/// checkpoint that loads: saving the loaded state and loading that again reproduces values,
/// moments and step count bit for bit.
inline void checkpoint_input(const std::uint8_t* data, std::size_t size) {
    using Model = ViTSimMIM<float, kFuzzCheckpointConfig>;
    struct State {
        std::unique_ptr<Model> model = std::make_unique<Model>(random_mask_patch<kFuzzCheckpointConfig, kFuzzCheckpointConfigMask>(), 0);
        AdamW<float> opt{model->params()};
    };
    static State state;
    const auto dir = scratch_dir("checkpoint");
    write_bytes(dir / "checkpoint.safetensors", data, size);
    std::map<std::string, std::string> meta;
    try {
        meta = io::load_checkpoint(dir / "checkpoint.safetensors", state.model->params(), state.opt);
    } catch (const io::SafetensorsError&) {
        return;
    }
    auto& params = state.model->params();
    const std::vector<float> values(params.values(), params.values() + params.size());
    const std::vector<float> m(state.opt.exp_avg().begin(), state.opt.exp_avg().end());
    const std::vector<float> v(state.opt.exp_avg_sq().begin(), state.opt.exp_avg_sq().end());
    const std::int64_t steps = state.opt.steps();
    io::save_checkpoint(dir / "again.safetensors", params, state.opt, meta);
    std::fill(params.values(), params.values() + params.size(), -1.0f);
    io::load_checkpoint(dir / "again.safetensors", params, state.opt);
    const auto same_bits = [](const float* a, const float* b, std::size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; };
    require(same_bits(values.data(), params.values(), values.size()), "checkpoint round trip changed parameter values");
    require(same_bits(m.data(), state.opt.exp_avg().data(), m.size()), "checkpoint round trip changed exp_avg");
    require(same_bits(v.data(), state.opt.exp_avg_sq().data(), v.size()), "checkpoint round trip changed exp_avg_sq");
    require(state.opt.steps() == steps, "checkpoint round trip changed the optimizer step count");
}

/// simmim::data::IdxDataset on an image file and an optional label file. Input layout: byte 0 =
/// flags (bit 0: a label file is present); with labels, bytes 1-2 are the label file's length L
/// (big-endian, clamped to what is left) and the label file is the last L bytes; the image file is
/// everything between. Oracles for files that load: every image has rows x cols pixels and is, for
/// an uncompressed file, the bytes at its offset (16-byte header); a label equals its byte of an
/// uncompressed label file (8-byte header) and is below num_classes(); get(size()) throws DataError.
inline void idx_input(const std::uint8_t* input, std::size_t size) {
    if (size < 1) return;
    const bool has_labels = (input[0] & 1) != 0;
    std::size_t pos = 1, label_size = 0;
    if (has_labels) {
        if (size < 3) return;
        label_size = std::min<std::size_t>((std::size_t(input[1]) << 8) | input[2], size - 3);
        pos = 3;
    }
    const std::uint8_t* images = input + pos;
    const std::size_t image_size = size - pos - label_size;
    const std::uint8_t* labels = images + image_size;

    const auto dir = scratch_dir("idx");
    const auto image_path = dir / "images-idx3-ubyte", label_path = dir / "labels-idx1-ubyte";
    write_bytes(image_path, images, image_size);
    if (has_labels) write_bytes(label_path, labels, label_size);
    try {
        const data::IdxDataset ds(image_path, has_labels ? label_path : std::filesystem::path());
        (void)ds.description();
        const bool images_plain = !(image_size >= 2 && images[0] == 0x1f && images[1] == 0x8b);
        const bool labels_plain = !(label_size >= 2 && labels[0] == 0x1f && labels[1] == 0x8b);
        for (std::size_t i = 0; i < ds.size(); ++i) {
            const data::RawImage img = ds.get(i);
            const std::size_t n = std::size_t(img.width) * std::size_t(img.height);
            const std::string which = "image " + std::to_string(i);
            require(img.channels == 1 && img.width > 0 && img.height > 0 && img.pixels.size() == n, which + ": bad geometry");
            if (images_plain) require(std::equal(img.pixels.begin(), img.pixels.end(), images + 16 + i * n), which + ": pixels differ from the file");
            if (has_labels && labels_plain) require(img.label == labels[8 + i], which + ": label differs from the file");
            if (!has_labels) require(img.label == -1, which + ": unlabeled image has a label");
            require(img.label < ds.num_classes(), which + ": label " + std::to_string(img.label) + " >= num_classes()");
        }
        try {
            (void)ds.get(ds.size());
        } catch (const data::DataError&) {
            return;
        }
        oracle_failure("get(size()) did not throw DataError");
    } catch (const data::DataError&) {
    }
}

/// simmim::data::CifarDataset on the test split's file. Input layout: byte 0 bit 0 chooses CIFAR-100
/// (else CIFAR-10); the rest is test.bin / test_batch.bin. Oracles for a file that loads: size() is
/// the record count; each image is 32x32x3, its interleaved pixel (y, x, c) is the record's planar
/// byte [c][y][x], its label the record's (fine) label byte.
inline void cifar_input(const std::uint8_t* input, std::size_t size) {
    if (size < 1) return;
    const int which = (input[0] & 1) ? 100 : 10;
    const std::uint8_t* file = input + 1;
    const std::size_t file_size = size - 1;
    const auto dir = scratch_dir("cifar");
    write_bytes(dir / (which == 10 ? "test_batch.bin" : "test.bin"), file, file_size);
    try {
        const data::CifarDataset ds(dir, /*train=*/false, which);
        const std::size_t label_bytes = which == 10 ? 1 : 2, record = label_bytes + 3072;
        require(ds.size() == file_size / record && file_size % record == 0, "size() differs from the record count");
        for (std::size_t i = 0; i < ds.size(); ++i) {
            const data::RawImage img = ds.get(i);
            const std::uint8_t* rec = file + i * record;
            const std::string which_image = "image " + std::to_string(i);
            require(img.width == 32 && img.height == 32 && img.channels == 3 && img.pixels.size() == 3072, which_image + ": bad geometry");
            require(img.label == rec[label_bytes - 1], which_image + ": label differs from the file");
            bool same = true;
            for (std::size_t y = 0; y < 32; ++y)
                for (std::size_t x = 0; x < 32; ++x)
                    for (std::size_t c = 0; c < 3; ++c) same = same && img.pixels[(y * 32 + x) * 3 + c] == rec[label_bytes + c * 1024 + y * 32 + x];
            require(same, which_image + ": a pixel differs from the file");
        }
        (void)ds.description();
    } catch (const data::DataError&) {
    }
}

/// The image-folder path of pretraining: ImageFolderDataset on a directory holding one file,
/// validate(), get(0), then the pretraining augmentation. Input layout: byte 0 bits 0-1 choose the
/// file name (.png, .jpg, .jpeg, .PNG; the decoder is chosen by content, so a JPEG named .png is
/// decoded as JPEG and every other format is refused), bit 2 the model's channel count (3, else 1);
/// the rest is the file. Oracles: a file that validate() keeps decodes in get() (validate() reads it
/// whole, damaged data included); for an image that decodes: a JPEG or PNG signature; positive size,
/// 1..4 channels, width * height * channels pixel bytes, at most the default pixel limit; the size
/// and channels data::read_image_info reported on the file (validate()'s check); for a PNG, the size
/// in its IHDR chunk (bytes 16-23, read here); the augmented output is finite.
inline void image_input(const std::uint8_t* input, std::size_t size) {
    if (size < 1) return;
    static const char* const kNames[] = {"image.png", "image.jpg", "image.jpeg", "IMAGE.PNG"};
    const auto dir = scratch_dir("image");
    const auto path = dir / kNames[input[0] & 3];
    const std::uint8_t* file = input + 1;
    const std::size_t file_size = size - 1;
    write_bytes(path, file, file_size);
    const int channels = (input[0] & 4) ? 3 : 1;
    try {
        data::ImageFolderDataset ds(dir);
        ds.validate();
        data::ImageInfo info;
        try {
            info = data::read_image_info(path);
        } catch (const data::DataError& e) {
            oracle_failure(std::string("validate() kept a file whose header read_image_info rejects: ") + e.what());
        }
        data::RawImage img;
        try {
            img = ds.get(0);
        } catch (const data::DataError& e) {  // validate() checked the whole file: what it keeps decodes
            oracle_failure(std::string("validate() kept a file that get() cannot decode: ") + e.what());
        }
        const auto format = data::sniff_image_format(std::span<const std::uint8_t>(file, file_size));
        require(format != data::ImageFormat::Unknown && format == info.format, "decoded a file without a JPEG/PNG signature");
        require(img.width > 0 && img.height > 0 && img.channels >= 1 && img.channels <= 4, "decoded image has a bad geometry");
        require(std::uint64_t(img.width) * std::uint64_t(img.height) <= data::kDefaultMaxImagePixels, "decoded image exceeds the pixel limit");
        require(img.pixels.size() == std::size_t(img.width) * std::size_t(img.height) * std::size_t(img.channels),
                "decoded image's pixel count differs from width * height * channels");
        require(img.width == info.width && img.height == info.height && img.channels == info.channels,
                "decoded " + std::to_string(img.width) + "x" + std::to_string(img.height) + "x" + std::to_string(img.channels) +
                    " differs from the header's " + std::to_string(info.width) + "x" + std::to_string(info.height) + "x" +
                    std::to_string(info.channels));
        if (format == data::ImageFormat::Png) {
            require(file_size >= 24 && std::memcmp(file + 12, "IHDR", 4) == 0, "decoded a PNG whose first chunk is not IHDR");
            const auto be32 = [&](std::size_t at) {
                return std::uint32_t(file[at]) << 24 | std::uint32_t(file[at + 1]) << 16 | std::uint32_t(file[at + 2]) << 8 | file[at + 3];
            };
            require(be32(16) == std::uint32_t(img.width) && be32(20) == std::uint32_t(img.height), "decoded size differs from the IHDR chunk's");
        }
        data::AugmentConfig cfg;
        cfg.out_size = 16;
        cfg.out_channels = channels;
        cfg.norm = channels == 3 ? data::kImageNetNorm : data::kFashionMnistNorm;
        Rng rng(size);
        std::vector<float> out(static_cast<std::size_t>(channels) * 16 * 16);  // (C, 16, 16)
        data::augment(img, cfg, rng, out.data());
        for (const float value : out) require(std::isfinite(value), "augmented image has a non-finite value");
    } catch (const data::DataError&) {
    }
}

}  // namespace simmim::fuzz
