// simmim/data/dataset.hpp: the dataset interface every loader and transform in simmim::data uses.
//
// A Dataset is a random-access, read-only collection of decoded 8-bit images. get() is const and
// must be safe to call from several threads at once (the BatchLoader's workers do), so
// implementations hold no mutable shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "simmim/core/memory.hpp"

namespace simmim::data {

/// One decoded image: interleaved 8-bit pixels, row-major.
struct RawImage {
    int width = 0, height = 0, channels = 0;
    std::vector<std::uint8_t> pixels;  // (H, W, C)
    int label = -1;                    // class index, -1 if unlabeled
};

/// Every error raised by simmim::data: the message names the file (or object) and states what
/// was expected and what was found.
class DataError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Random-access image collection.
class Dataset {
public:
    virtual ~Dataset() = default;
    virtual std::size_t size() const = 0;
    /// Image `index` (0 <= index < size(), else DataError). Thread-safe.
    virtual RawImage get(std::size_t index) const = 0;
    /// One line for logs, e.g. "IDX /path (60000 images 28x28x1, 10 classes)".
    virtual std::string description() const = 0;
    /// Number of classes; 0 if unlabeled.
    virtual int num_classes() const = 0;
};

namespace detail {

/// DataError "<what>: needs <n> bytes of memory, but only <m> bytes are available (limited by ...)"
/// when `needed` bytes exceed what the process can still get (simmim/core/memory.hpp).
inline void require_memory(const std::string& what, std::uint64_t needed) {
    if (auto message = memory_shortfall(what, needed)) throw DataError(*message);
}

/// Runs body() and returns its result; a std::bad_alloc escaping it becomes a DataError naming
/// `what`, the bytes it needed (when `needed` > 0) and the memory left: no std::bad_alloc leaves a
/// loader of simmim::data.
template <class Body>
auto rethrow_out_of_memory(const std::string& what, Body&& body, std::uint64_t needed = 0) -> decltype(body()) {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        const MemoryAvailable available = available_memory();
        throw DataError(what + ": out of memory: an allocation failed" +
                        (needed > 0 ? " while loading what needs " + format_bytes(needed) : std::string()) + " (" +
                        (available.limited_by.empty() ? std::string("no memory limit known")
                                                      : format_bytes(available.bytes) + " available, limited by " + available.limited_by) +
                        ")");
    }
}

/// Whole file as bytes; DataError if it is missing, not a regular file, unreadable, or larger than
/// the memory the process can still get (require_memory).
inline std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(status)) throw DataError(path.string() + ": file not found");
    if (!std::filesystem::is_regular_file(status)) throw DataError(path.string() + ": not a regular file");
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) throw DataError(path.string() + ": cannot read file size (" + ec.message() + ")");
    require_memory(path.string(), size);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw DataError(path.string() + ": cannot open file for reading");
    std::vector<std::uint8_t> bytes =
        rethrow_out_of_memory(path.string(), [&] { return std::vector<std::uint8_t>(static_cast<std::size_t>(size)); }, size);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    const auto got = static_cast<std::uintmax_t>(in.gcount());
    if (got != size)
        throw DataError(path.string() + ": read " + std::to_string(got) + " bytes, expected " + std::to_string(size));
    return bytes;
}

/// DataError for an index outside [0, size).
inline void check_index(std::size_t index, std::size_t size, const std::string& what) {
    if (index >= size)
        throw DataError(what + ": index " + std::to_string(index) + " out of range (size " + std::to_string(size) + ")");
}

}  // namespace detail

}  // namespace simmim::data
