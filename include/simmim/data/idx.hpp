// simmim/data/idx.hpp: MNIST / Fashion-MNIST IDX files, plain or gzip-compressed.
//
// IDX layout (big-endian): images = magic 0x00000803, N, rows, cols, then N*rows*cols bytes;
// labels = magic 0x00000801, N, then N bytes. A file starting with the gzip magic 1f 8b is
// inflated in memory first (zlib; link with -lz). Everything is loaded at construction.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "simmim/data/dataset.hpp"

namespace simmim::data {

/// Where the installed Fashion-MNIST files live on the project machines.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

namespace detail {

inline bool is_gzip(const std::vector<std::uint8_t>& bytes) {
    return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

/// Inflate a gzip file held in memory (concatenated members are joined, as gunzip does).
inline std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& in, const std::string& name) {
    std::vector<std::uint8_t> out;
    if (in.size() >= 18) {  // ISIZE trailer: uncompressed size mod 2^32, a capacity hint only
        const std::size_t n = in.size();
        const std::size_t claimed = std::uint32_t(in[n - 4]) | std::uint32_t(in[n - 3]) << 8 | std::uint32_t(in[n - 2]) << 16 |
                                    std::uint32_t(in[n - 1]) << 24;
        // deflate expands at most ~1032x: never trust the trailer beyond what the input can hold
        const std::size_t hint = std::min<std::size_t>(claimed, n * 1032);
        require_memory(name + " (gzip, " + std::to_string(claimed) + " bytes uncompressed according to its trailer)", n + hint);
        out.reserve(hint);
    }
    z_stream zs{};
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw DataError(name + ": zlib inflateInit2 failed");
    struct InflateEnd {
        z_stream* zs;
        ~InflateEnd() { inflateEnd(zs); }
    } inflate_end{&zs};

    constexpr std::size_t kOutChunk = std::size_t(1) << 20;
    constexpr std::size_t kMaxIn = std::size_t(1) << 30;  // avail_in is a 32-bit uInt
    std::size_t in_pos = 0;                               // bytes handed to zlib so far
    for (;;) {
        if (zs.avail_in == 0 && in_pos < in.size()) {
            const std::size_t n = std::min(in.size() - in_pos, kMaxIn);
            zs.next_in = const_cast<Bytef*>(in.data() + in_pos);
            zs.avail_in = static_cast<uInt>(n);
            in_pos += n;
        }
        const std::size_t old_size = out.size();
        out.resize(old_size + kOutChunk);
        zs.next_out = out.data() + old_size;
        zs.avail_out = static_cast<uInt>(kOutChunk);
        const int rc = inflate(&zs, Z_NO_FLUSH);
        out.resize(out.size() - zs.avail_out);
        if (rc == Z_STREAM_END) {
            const std::size_t consumed = in_pos - zs.avail_in;
            if (consumed + 2 <= in.size() && in[consumed] == 0x1f && in[consumed + 1] == 0x8b) {
                inflateReset(&zs);  // another gzip member follows
                continue;
            }
            return out;  // trailing non-gzip bytes are ignored, as gunzip does
        }
        if (rc == Z_OK) continue;
        if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_pos == in.size())
            throw DataError(name + ": gzip stream is truncated (compressed data ends after " + std::to_string(in.size()) +
                            " bytes, before the end of the stream)");
        throw DataError(name + ": corrupt gzip data (zlib: " + (zs.msg ? zs.msg : "error " + std::to_string(rc)) + ")");
    }
}

/// File contents, inflated if gzip-compressed.
inline std::vector<std::uint8_t> read_maybe_gzip(const std::filesystem::path& path) {
    std::vector<std::uint8_t> bytes = read_file(path);
    return is_gzip(bytes) ? gunzip(bytes, path.string()) : bytes;
}

inline std::uint32_t read_be32(const std::uint8_t* p) {
    return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | std::uint32_t(p[3]);
}

inline std::string hex32(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08X", v);
    return buf;
}

/// Check magic and exact size of an IDX file with `ndims` dimensions; returns the dimensions.
inline std::vector<std::uint32_t> parse_idx_header(const std::vector<std::uint8_t>& bytes, std::uint32_t magic,
                                                   int ndims, const std::string& name, bool was_gzip) {
    const std::string found_where = was_gzip ? " (after gzip decompression)" : "";
    const std::size_t header = 4 + 4 * static_cast<std::size_t>(ndims);
    if (bytes.size() < 4)
        throw DataError(name + ": truncated: expected at least " + std::to_string(header) + " header bytes, found " +
                        std::to_string(bytes.size()) + found_where);
    const std::uint32_t found_magic = read_be32(bytes.data());
    if (found_magic != magic)
        throw DataError(name + ": wrong IDX magic number: expected " + hex32(magic) + ", found " + hex32(found_magic));
    if (bytes.size() < header)
        throw DataError(name + ": truncated: expected at least " + std::to_string(header) + " header bytes, found " +
                        std::to_string(bytes.size()) + found_where);
    std::vector<std::uint32_t> dims(static_cast<std::size_t>(ndims));
    for (int d = 0; d < ndims; ++d) dims[static_cast<std::size_t>(d)] = read_be32(bytes.data() + 4 + 4 * d);
    // The product of 32-bit dims may exceed 64 bits: such a file is necessarily truncated.
    const bool any_zero = std::find(dims.begin(), dims.end(), 0u) != dims.end();
    bool overflow = false;
    std::uint64_t expected = any_zero ? 0 : 1;
    for (const std::uint32_t dim : dims) {
        if (dim != 0 && expected > (UINT64_MAX - header) / dim) overflow = true;
        expected *= dim;
    }
    expected += header;
    if (overflow || expected != bytes.size()) {
        std::string dims_text;
        for (int d = 0; d < ndims; ++d) dims_text += (d ? " x " : "") + std::to_string(dims[static_cast<std::size_t>(d)]);
        const std::string expected_text = overflow ? std::string("more than 2^64") : std::to_string(expected);
        throw DataError(name + (overflow || expected > bytes.size() ? ": truncated" : ": trailing bytes") + ": expected " +
                        expected_text + " bytes (" + std::to_string(header) + "-byte header + " + dims_text + "), found " +
                        std::to_string(bytes.size()) + found_where);
    }
    return dims;
}

}  // namespace detail

/// MNIST-style IDX image file (unsigned bytes, N x rows x cols), with optional IDX label file.
class IdxDataset final : public Dataset {
public:
    /// Loads both files; labels_path empty means unlabeled. DataError on a missing file, wrong
    /// magic, truncated or oversized file, corrupt gzip data, or a label count that differs from
    /// the image count. Before reading a file it checks that the process can get the memory the file
    /// needs (its size, plus for a gzip file the uncompressed size its trailer states, capped at what
    /// deflate can expand to): DataError naming the file, the bytes needed and the bytes available
    /// otherwise; a std::bad_alloc while loading also becomes a DataError naming the file.
    explicit IdxDataset(const std::filesystem::path& images_path, const std::filesystem::path& labels_path = {})
        : images_path_(images_path) {
        detail::rethrow_out_of_memory(images_path.string(), [&] { load(images_path, labels_path); });
    }

    std::size_t size() const override { return count_; }

    RawImage get(std::size_t index) const override {
        detail::check_index(index, count_, "IDX " + images_path_.string());
        const std::size_t n = static_cast<std::size_t>(rows_) * static_cast<std::size_t>(cols_);
        RawImage image;
        image.width = cols_;
        image.height = rows_;
        image.channels = 1;
        image.pixels.assign(pixels_.begin() + static_cast<std::ptrdiff_t>(index * n),
                            pixels_.begin() + static_cast<std::ptrdiff_t>((index + 1) * n));
        image.label = labels_.empty() ? -1 : int(labels_[index]);
        return image;
    }

    std::string description() const override {
        std::string text = "IDX " + images_path_.string() + " (" + std::to_string(count_) + " images " +
                           std::to_string(rows_) + "x" + std::to_string(cols_) + "x1";
        if (!labels_.empty()) text += ", " + std::to_string(num_classes_) + " classes";
        return text + ")";
    }

    int num_classes() const override { return num_classes_; }

private:
    void load(const std::filesystem::path& images_path, const std::filesystem::path& labels_path) {
        const std::string image_name = images_path.string();
        {
            std::vector<std::uint8_t> raw = detail::read_file(images_path);
            const bool gz = detail::is_gzip(raw);
            pixels_ = gz ? detail::gunzip(raw, image_name) : std::move(raw);
            const auto dims = detail::parse_idx_header(pixels_, 0x00000803u, 3, image_name, gz);
            if (dims[1] == 0 || dims[2] == 0 || dims[1] > 65535 || dims[2] > 65535)
                throw DataError(image_name + ": image size " + std::to_string(dims[1]) + "x" + std::to_string(dims[2]) +
                                " is not in 1..65535");
            count_ = dims[0];
            rows_ = static_cast<int>(dims[1]);
            cols_ = static_cast<int>(dims[2]);
            pixels_.erase(pixels_.begin(), pixels_.begin() + 16);  // keep only (N, rows, cols)
        }
        if (!labels_path.empty()) {
            const std::string label_name = labels_path.string();
            std::vector<std::uint8_t> raw = detail::read_file(labels_path);
            const bool gz = detail::is_gzip(raw);
            labels_ = gz ? detail::gunzip(raw, label_name) : std::move(raw);
            const auto dims = detail::parse_idx_header(labels_, 0x00000801u, 1, label_name, gz);
            if (dims[0] != count_)
                throw DataError(label_name + ": label count " + std::to_string(dims[0]) + " does not match image count " +
                                std::to_string(count_) + " of " + image_name);
            labels_.erase(labels_.begin(), labels_.begin() + 8);
            const auto max_label = std::max_element(labels_.begin(), labels_.end());
            num_classes_ = max_label == labels_.end() ? 0 : int(*max_label) + 1;
        }
    }

    std::filesystem::path images_path_;
    std::size_t count_ = 0;
    int rows_ = 0, cols_ = 0;
    std::vector<std::uint8_t> pixels_;  // (N, rows, cols)
    std::vector<std::uint8_t> labels_;  // (N) or empty
    int num_classes_ = 0;               // max label + 1, 0 if unlabeled
};

/// Fashion-MNIST (or MNIST: same file names) from `dir`: {train,t10k}-images-idx3-ubyte and
/// {train,t10k}-labels-idx1-ubyte, each plain or with a ".gz" suffix (the plain file wins).
inline IdxDataset open_fashion_mnist(const std::filesystem::path& dir = kDefaultFashionMnistDir, bool train = true) {
    const std::string prefix = train ? "train" : "t10k";
    const auto locate = [&](const std::string& stem) {
        const auto plain = dir / stem;
        const auto gz = dir / (stem + ".gz");
        std::error_code ec;
        if (std::filesystem::is_regular_file(plain, ec)) return plain;
        if (std::filesystem::is_regular_file(gz, ec)) return gz;
        throw DataError("Fashion-MNIST: neither " + plain.string() + " nor " + gz.string() + " exists");
    };
    const auto images = locate(prefix + "-images-idx3-ubyte");
    const auto labels = locate(prefix + "-labels-idx1-ubyte");
    return IdxDataset(images, labels);
}

}  // namespace simmim::data
