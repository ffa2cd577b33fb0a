// simmim/io/safetensors.hpp: read and write safetensors files (the format of HuggingFace
// `safetensors`, as written by its Python `save_file`), for checkpoints and PyTorch reference data.
//
// Layout of a file:
//   bytes [0, 8)        N, the header length, an unsigned 64-bit little-endian integer
//   bytes [8, 8 + N)    a UTF-8 JSON object: for each tensor
//                         "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
//                       and optionally "__metadata__": {"key": "value", ...} (strings only)
//   bytes [8 + N, end)  the data buffer; a tensor's bytes are data[begin, end), C-contiguous,
//                       little-endian; the tensors tile the buffer without overlaps or holes.
// Writers pad the header with spaces to a multiple of 8 bytes.
//
// Reading validates everything (header size capped at 100 MB, JSON, types, dtypes, shapes,
// offsets, coverage) and throws SafetensorsError naming the source and the tensor or byte offset.
#pragma once

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "simmim/core/memory.hpp"

namespace simmim::io {

static_assert(std::endian::native == std::endian::little,
              "simmim/io/safetensors.hpp copies tensor bytes as they are: it needs a little-endian host");

/// Element types of the safetensors format that simmim reads and writes.
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

/// Largest header accepted on read or produced on write (the limit of the reference implementation).
inline constexpr std::size_t max_header_bytes = 100'000'000;

/// The format's name of a dtype: "F64", "F32", ..., "BOOL".
constexpr std::string_view dtype_name(DType dtype) noexcept {
    switch (dtype) {
        case DType::F64: return "F64";
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I64: return "I64";
        case DType::I32: return "I32";
        case DType::I16: return "I16";
        case DType::I8: return "I8";
        case DType::U8: return "U8";
        case DType::BOOL: return "BOOL";
    }
    return "invalid";
}

/// Bytes per element of a dtype.
constexpr std::size_t dtype_size(DType dtype) noexcept {
    switch (dtype) {
        case DType::F64: case DType::I64: return 8;
        case DType::F32: case DType::I32: return 4;
        case DType::F16: case DType::BF16: case DType::I16: return 2;
        case DType::I8: case DType::U8: case DType::BOOL: return 1;
    }
    return 0;
}

/// The dtype called `name` in a header ("F32", ...), or nullopt if simmim does not know it.
constexpr std::optional<DType> dtype_from_name(std::string_view name) noexcept {
    for (DType dtype : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16,
                        DType::I8, DType::U8, DType::BOOL}) {
        if (dtype_name(dtype) == name) return dtype;
    }
    return std::nullopt;
}

/// Every failure of this header: malformed input, conversion, shape checks and file I/O.
class SafetensorsError : public std::runtime_error {
public:
    using runtime_error::runtime_error;
};

/// C++ element types that map one-to-one onto a dtype (what TensorData::from stores).
template <class T>
concept StorableElement = std::same_as<T, double> || std::same_as<T, float> || std::same_as<T, std::int64_t> ||
                          std::same_as<T, std::int32_t> || std::same_as<T, std::int16_t> ||
                          std::same_as<T, std::int8_t> || std::same_as<T, std::uint8_t> || std::same_as<T, bool>;

/// C++ types any numeric dtype converts to (what TensorData::to produces): floating point, or an
/// integer type other than bool and the character types.
template <class T>
concept ConvertibleElement =
    std::floating_point<T> ||
    (std::integral<T> && !std::same_as<T, bool> && !std::same_as<T, char> && !std::same_as<T, wchar_t> &&
     !std::same_as<T, char8_t> && !std::same_as<T, char16_t> && !std::same_as<T, char32_t>);

/// The dtype that stores T.
template <StorableElement T>
constexpr DType dtype_of() noexcept {
    if constexpr (std::same_as<T, double>) return DType::F64;
    else if constexpr (std::same_as<T, float>) return DType::F32;
    else if constexpr (std::same_as<T, std::int64_t>) return DType::I64;
    else if constexpr (std::same_as<T, std::int32_t>) return DType::I32;
    else if constexpr (std::same_as<T, std::int16_t>) return DType::I16;
    else if constexpr (std::same_as<T, std::int8_t>) return DType::I8;
    else if constexpr (std::same_as<T, std::uint8_t>) return DType::U8;
    else return DType::BOOL;
}

namespace detail {

/// "[2, 3]"; "[]" for a scalar.
inline std::string shape_string(std::span<const std::int64_t> shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i > 0) text += ", ";
        text += std::to_string(shape[i]);
    }
    return text + "]";
}

/// Number of bytes of a tensor of `shape` and `dtype`, or nullopt if a dimension is negative or
/// the count overflows 64 bits.
inline std::optional<std::uint64_t> byte_count(std::span<const std::int64_t> shape, DType dtype) noexcept {
    std::uint64_t count = dtype_size(dtype);
    for (const std::int64_t dim : shape) {
        if (dim < 0 || __builtin_mul_overflow(count, static_cast<std::uint64_t>(dim), &count)) return std::nullopt;
    }
    return count;
}

/// How messages name where the data came from.
inline std::string source_label(std::string_view source) {
    return source.empty() ? std::string("in-memory safetensors data") : "safetensors file '" + std::string(source) + "'";
}

/// Exact IEEE binary16 -> binary32 (every half is a float; NaN payloads are kept).
inline float f16_to_float(std::uint16_t half) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1Fu;
    const std::uint32_t mantissa = half & 0x3FFu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
    return std::bit_cast<float>(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

/// Exact bfloat16 -> binary32 (bfloat16 is the upper half of a float).
inline float bf16_to_float(std::uint16_t bits) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

// Stored forms of the dtypes that are not a C++ arithmetic type, each decoded to one.
struct Half { std::uint16_t bits; };
struct BFloat16 { std::uint16_t bits; };
struct BoolByte { std::uint8_t value; };
static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2 && sizeof(BoolByte) == 1);

inline float decode(Half h) noexcept { return f16_to_float(h.bits); }
inline float decode(BFloat16 b) noexcept { return bf16_to_float(b.bits); }
inline std::uint8_t decode(BoolByte b) noexcept { return b.value != 0 ? 1 : 0; }
template <class S>
    requires std::is_arithmetic_v<S>
S decode(S value) noexcept { return value; }

/// Stores `value` as T in `out`. Floating targets take the nearest value; integer targets accept
/// only values they hold exactly (false for NaN, infinities, fractions and out-of-range values).
template <ConvertibleElement T, class S>
bool convert_value(S value, T& out) noexcept {
    if constexpr (std::floating_point<T>) {
        out = static_cast<T>(value);
        return true;
    } else if constexpr (std::floating_point<S>) {
        const double v = value;
        const double lowest = static_cast<double>(std::numeric_limits<T>::min());     // 0 or -2^k: exact
        const double past_max = std::ldexp(1.0, std::numeric_limits<T>::digits);     // 2^k: exact
        if (!(v >= lowest && v < past_max) || v != std::trunc(v)) return false;      // NaN fails too
        out = static_cast<T>(v);
        return true;
    } else {
        if (!std::in_range<T>(value)) return false;
        out = static_cast<T>(value);
        return true;
    }
}

template <class T>
std::string type_label() {
    if constexpr (std::same_as<T, float>) return "float";
    else if constexpr (std::same_as<T, double>) return "double";
    else if constexpr (std::floating_point<T>) return "long double";
    else return (std::is_signed_v<T> ? "int" : "uint") + std::to_string(8 * sizeof(T)) + "_t";
}

template <class S>
std::string value_label(S value) {
    char text[64];
    const auto result = std::to_chars(text, text + sizeof text, value);
    return std::string(text, result.ptr);
}

/// Decodes `count` elements stored as `Stored` in `bytes` into `out`, converting to T.
template <class Stored, ConvertibleElement T>
void convert_elements(std::span<const std::byte> bytes, std::vector<T>& out, DType dtype) {
    if constexpr (std::same_as<Stored, T>) {
        if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    } else {
        for (std::size_t i = 0; i < out.size(); ++i) {
            Stored stored;
            std::memcpy(&stored, bytes.data() + i * sizeof(Stored), sizeof(Stored));
            const auto value = decode(stored);
            if (!convert_value(value, out[i])) {
                throw SafetensorsError("element " + std::to_string(i) + " (" + value_label(value) + ") of a " +
                                       std::string(dtype_name(dtype)) + " tensor is not representable as " +
                                       type_label<T>());
            }
        }
    }
}

}  // namespace detail

/// One tensor: dtype, shape and its raw little-endian C-contiguous bytes.
struct TensorData {
    DType dtype = DType::F32;
    std::vector<std::int64_t> shape;  // [] for a scalar
    std::vector<std::byte> bytes;     // (numel * dtype_size(dtype)) little-endian, C-contiguous

    /// Product of the shape (1 for a scalar). Throws SafetensorsError on a negative or overflowing shape.
    std::size_t numel() const {
        if (!detail::byte_count(shape, dtype)) {
            throw SafetensorsError("tensor shape " + detail::shape_string(shape) + " of " +
                                   std::string(dtype_name(dtype)) + " has a negative dimension or overflows");
        }
        std::size_t count = 1;
        for (const std::int64_t dim : shape) count *= static_cast<std::size_t>(dim);
        return count;
    }

    /// All elements converted to T. Floating targets round to nearest; integer targets throw
    /// SafetensorsError for values they cannot hold exactly (fractions, NaN, out of range). F16 and
    /// BF16 decode exactly; BOOL reads as 0/1. Throws if `bytes` does not match the shape.
    template <class T>
        requires ConvertibleElement<T>
    std::vector<T> to() const {
        const std::size_t count = numel();
        if (bytes.size() != count * dtype_size(dtype)) {
            throw SafetensorsError("tensor of shape " + detail::shape_string(shape) + " and dtype " +
                                   std::string(dtype_name(dtype)) + " needs " +
                                   std::to_string(count * dtype_size(dtype)) + " bytes, has " +
                                   std::to_string(bytes.size()));
        }
        std::vector<T> out(count);
        switch (dtype) {
            case DType::F64: detail::convert_elements<double>(bytes, out, dtype); break;
            case DType::F32: detail::convert_elements<float>(bytes, out, dtype); break;
            case DType::F16: detail::convert_elements<detail::Half>(bytes, out, dtype); break;
            case DType::BF16: detail::convert_elements<detail::BFloat16>(bytes, out, dtype); break;
            case DType::I64: detail::convert_elements<std::int64_t>(bytes, out, dtype); break;
            case DType::I32: detail::convert_elements<std::int32_t>(bytes, out, dtype); break;
            case DType::I16: detail::convert_elements<std::int16_t>(bytes, out, dtype); break;
            case DType::I8: detail::convert_elements<std::int8_t>(bytes, out, dtype); break;
            case DType::U8: detail::convert_elements<std::uint8_t>(bytes, out, dtype); break;
            case DType::BOOL: detail::convert_elements<detail::BoolByte>(bytes, out, dtype); break;
        }
        return out;
    }

    /// A tensor of dtype_of<T>() holding `values` in the given shape. Throws SafetensorsError if
    /// the shape's element count differs from values.size().
    template <class T>
        requires StorableElement<T>
    static TensorData from(std::span<const T> values, std::vector<std::int64_t> shape) {
        TensorData tensor{dtype_of<T>(), std::move(shape), {}};
        if (tensor.numel() != values.size()) {
            throw SafetensorsError("tensor shape " + detail::shape_string(tensor.shape) + " holds " +
                                   std::to_string(tensor.numel()) + " elements, but " +
                                   std::to_string(values.size()) + " values were given");
        }
        tensor.bytes.resize(values.size() * sizeof(T));
        if constexpr (std::same_as<T, bool>) {
            for (std::size_t i = 0; i < values.size(); ++i) tensor.bytes[i] = std::byte{values[i] ? std::uint8_t{1} : std::uint8_t{0}};
        } else if (!values.empty()) {
            std::memcpy(tensor.bytes.data(), values.data(), tensor.bytes.size());
        }
        return tensor;
    }
};

/// An ordered set of named tensors plus string metadata: the contents of one safetensors file.
class TensorFile {
public:
    /// Adds `tensor` as `name`, or replaces the tensor of that name keeping its position. Throws
    /// SafetensorsError if the name is "__metadata__" or the bytes do not match shape and dtype.
    void set(std::string name, TensorData tensor) {
        if (name == "__metadata__") {
            throw SafetensorsError("cannot store a tensor named '__metadata__' (the name is reserved for metadata)");
        }
        const auto needed = detail::byte_count(tensor.shape, tensor.dtype);
        if (!needed || *needed != tensor.bytes.size()) {
            throw SafetensorsError("tensor '" + name + "': shape " + detail::shape_string(tensor.shape) + " of " +
                                   std::string(dtype_name(tensor.dtype)) + " needs " +
                                   (needed ? std::to_string(*needed) + " bytes" : std::string("an overflowing byte count")) +
                                   ", but " + std::to_string(tensor.bytes.size()) + " bytes were given");
        }
        if (const auto it = tensors_.find(name); it != tensors_.end()) {
            it->second = std::move(tensor);
            return;
        }
        names_.push_back(name);
        tensors_.emplace(std::move(name), std::move(tensor));
    }

    /// set(name, TensorData::from<T>(values, shape)).
    template <class T>
        requires StorableElement<T>
    void set(std::string name, std::span<const T> values, std::vector<std::int64_t> shape) {
        set(std::move(name), TensorData::from<T>(values, std::move(shape)));
    }

    bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

    /// The tensor called `name`; throws SafetensorsError "no tensor '<name>' in <source>" if absent.
    const TensorData& at(std::string_view name) const {
        const auto it = tensors_.find(name);
        if (it == tensors_.end()) {
            throw SafetensorsError("no tensor '" + std::string(name) + "' in " + detail::source_label(source));
        }
        return it->second;
    }

    /// Tensor names in order: insertion order, or data-offset order for a file that was read.
    const std::vector<std::string>& names() const noexcept { return names_; }

    std::map<std::string, std::string> metadata;  // the "__metadata__" object
    std::string source;                           // where it was read from, for messages

    /// The elements of `name` converted to T (see TensorData::to), after checking its shape.
    /// Throws SafetensorsError naming the source and tensor if it is missing, if its shape is not
    /// `expected_shape` (giving both), or if a value cannot be converted.
    template <class T>
        requires ConvertibleElement<T>
    std::vector<T> get(std::string_view name, std::span<const std::int64_t> expected_shape) const {
        const TensorData& tensor = at(name);
        const std::string where = detail::source_label(source) + ": tensor '" + std::string(name) + "'";
        if (!std::ranges::equal(tensor.shape, expected_shape)) {
            throw SafetensorsError(where + ": expected shape " + detail::shape_string(expected_shape) + ", found " +
                                   detail::shape_string(tensor.shape));
        }
        try {
            return tensor.to<T>();
        } catch (const SafetensorsError& error) {
            throw SafetensorsError(where + ": " + error.what());
        }
    }
    /// get<T>(name, {2, 3}).
    template <class T>
        requires ConvertibleElement<T>
    std::vector<T> get(std::string_view name, std::initializer_list<std::int64_t> expected_shape) const {
        return get<T>(name, std::span<const std::int64_t>(expected_shape.begin(), expected_shape.size()));
    }

private:
    std::vector<std::string> names_;
    std::map<std::string, TensorData, std::less<>> tensors_;
};

namespace detail {

/// Short description of a JSON value for messages: its type for containers, its text otherwise.
inline std::string json_label(const nlohmann::json& value) {
    if (value.is_structured()) return std::string(value.type_name());
    std::string text = value.dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return text;
}

/// Parses the header text. Besides JSON syntax it rejects duplicate keys in any object (JSON
/// would silently keep the last) and containers nested deeper than a header needs (depth 2: the
/// top object, a tensor entry, its shape array), which bounds work on hostile input. Returns the
/// top-level keys in header order through `top_level_keys`.
inline nlohmann::json parse_header_json(std::string_view text, const std::string& where,
                                        std::vector<std::string>& top_level_keys) {
    using json = nlohmann::json;
    std::vector<std::set<std::string>> keys_of_open_objects;
    const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                if (depth > 2) {
                    throw SafetensorsError(where + ": header nests containers deeper than a safetensors header" +
                                           (top_level_keys.empty() ? std::string()
                                                                   : " (inside entry '" + top_level_keys.back() + "')"));
                }
                if (event == json::parse_event_t::object_start) keys_of_open_objects.emplace_back();
                break;
            case json::parse_event_t::object_end:
                keys_of_open_objects.pop_back();
                break;
            case json::parse_event_t::key: {
                const auto& key = parsed.get_ref<const std::string&>();
                if (!keys_of_open_objects.back().insert(key).second) {
                    // a header whose top level is an array has no entry names (top_level_keys stays empty)
                    throw SafetensorsError(where + ": duplicate key '" + key + "' in header" +
                                           (depth > 1 && !top_level_keys.empty() ? " entry '" + top_level_keys.back() + "'" : std::string()));
                }
                if (depth == 1) top_level_keys.push_back(key);
                break;
            }
            default:
                break;
        }
        return true;
    };
    try {
        return json::parse(text.begin(), text.end(), check);
    } catch (const json::parse_error& error) {
        throw SafetensorsError(where + ": header is not valid JSON at header byte " + std::to_string(error.byte) +
                               " (file offset " + std::to_string(8 + error.byte - 1) + "): " + error.what());
    } catch (const json::exception& error) {
        throw SafetensorsError(where + ": header is not valid JSON: " + error.what());
    }
}

/// A non-negative integer JSON value, or nullopt.
inline std::optional<std::uint64_t> json_unsigned(const nlohmann::json& value) {
    if (value.is_number_unsigned()) return value.get<std::uint64_t>();
    if (value.is_number_integer() && value.get<std::int64_t>() >= 0) return value.get<std::uint64_t>();  // "-0"
    return std::nullopt;
}

struct HeaderEntry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin, end;  // byte range in the data buffer
};

inline HeaderEntry parse_header_entry(const std::string& name, const nlohmann::json& entry, std::uint64_t data_size,
                                      const std::string& where) {
    const std::string tensor = where + ": tensor '" + name + "'";
    if (!entry.is_object()) throw SafetensorsError(tensor + ": header entry is not an object (found " + json_label(entry) + ")");
    const auto field = [&](const char* key) -> const nlohmann::json& {
        const auto it = entry.find(key);
        if (it == entry.end()) throw SafetensorsError(tensor + ": header entry has no \"" + key + "\"");
        return *it;
    };

    const nlohmann::json& dtype_json = field("dtype");
    if (!dtype_json.is_string()) {
        throw SafetensorsError(tensor + ": \"dtype\" is not a string (found " + json_label(dtype_json) + ")");
    }
    const auto dtype = dtype_from_name(dtype_json.get_ref<const std::string&>());
    if (!dtype) {
        throw SafetensorsError(tensor + ": unknown dtype '" + dtype_json.get<std::string>() +
                               "' (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    }

    const nlohmann::json& shape_json = field("shape");
    if (!shape_json.is_array()) {
        throw SafetensorsError(tensor + ": \"shape\" is not an array (found " + json_label(shape_json) + ")");
    }
    std::vector<std::int64_t> shape;
    shape.reserve(shape_json.size());
    for (std::size_t i = 0; i < shape_json.size(); ++i) {
        const auto dim = json_unsigned(shape_json[i]);
        if (!dim || *dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            throw SafetensorsError(tensor + ": shape[" + std::to_string(i) + "] is " + json_label(shape_json[i]) +
                                   ", expected a non-negative integer");
        }
        shape.push_back(static_cast<std::int64_t>(*dim));
    }

    const nlohmann::json& offsets_json = field("data_offsets");
    std::optional<std::uint64_t> begin, end;
    if (offsets_json.is_array() && offsets_json.size() == 2) {
        begin = json_unsigned(offsets_json[0]);
        end = json_unsigned(offsets_json[1]);
    }
    if (!begin || !end) {
        throw SafetensorsError(tensor + ": \"data_offsets\" is " + json_label(offsets_json) +
                               (offsets_json.is_array() ? " " + offsets_json.dump() : std::string()) +
                               ", expected [begin, end] with two non-negative integers");
    }
    const std::string offsets = "[" + std::to_string(*begin) + ", " + std::to_string(*end) + "]";
    if (*begin > *end || *end > data_size) {
        throw SafetensorsError(tensor + ": data_offsets " + offsets + " are not an ordered range within the " +
                               std::to_string(data_size) + "-byte data buffer");
    }
    const auto needed = byte_count(shape, *dtype);
    if (!needed) {
        throw SafetensorsError(tensor + ": shape " + shape_string(shape) + " of " + std::string(dtype_name(*dtype)) +
                               " overflows a 64-bit byte count");
    }
    if (*end - *begin != *needed) {
        throw SafetensorsError(tensor + ": data_offsets " + offsets + " hold " + std::to_string(*end - *begin) +
                               " bytes, but shape " + shape_string(shape) + " of " + std::string(dtype_name(*dtype)) +
                               " needs " + std::to_string(*needed));
    }
    return {name, *dtype, std::move(shape), *begin, *end};
}

}  // namespace detail

/// Parses a whole safetensors file held in memory. `source_name` names it in error messages and
/// becomes TensorFile::source. Tensor names come out in data-offset order (ties in header order),
/// so a file written by serialize_safetensors reads back in its insertion order.
inline TensorFile parse_safetensors(std::span<const std::byte> file_bytes, std::string source_name) {
    const std::string where = detail::source_label(source_name);
    if (file_bytes.size() < 8) {
        throw SafetensorsError(where + ": file is " + std::to_string(file_bytes.size()) +
                               " bytes, shorter than the 8-byte header length");
    }
    std::uint64_t header_size = 0;  // little-endian u64
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | std::to_integer<std::uint64_t>(file_bytes[i]);
    if (header_size > max_header_bytes) {
        throw SafetensorsError(where + ": header length " + std::to_string(header_size) + " exceeds the limit of " +
                               std::to_string(max_header_bytes) + " bytes");
    }
    const std::uint64_t after_length = file_bytes.size() - 8;
    if (header_size > after_length) {
        throw SafetensorsError(where + ": header length " + std::to_string(header_size) + " is larger than the " +
                               std::to_string(after_length) + " bytes that follow it (file size " +
                               std::to_string(file_bytes.size()) + ")");
    }
    const std::string_view header_text(reinterpret_cast<const char*>(file_bytes.data()) + 8, header_size);
    const std::span<const std::byte> data = file_bytes.subspan(8 + header_size);  // the data buffer

    std::vector<std::string> keys;  // top-level keys in header order
    const nlohmann::json header = detail::parse_header_json(header_text, where, keys);
    if (!header.is_object()) {
        throw SafetensorsError(where + ": header is not a JSON object (found " + detail::json_label(header) + ")");
    }

    TensorFile result;
    std::vector<detail::HeaderEntry> entries;
    for (const std::string& key : keys) {
        const nlohmann::json& value = header.at(key);
        if (key == "__metadata__") {
            if (!value.is_object()) {
                throw SafetensorsError(where + ": __metadata__ is not an object (found " + detail::json_label(value) + ")");
            }
            for (const auto& item : value.items()) {
                if (!item.value().is_string()) {
                    throw SafetensorsError(where + ": __metadata__ value of key '" + item.key() +
                                           "' is not a string (found " + detail::json_label(item.value()) + ")");
                }
                result.metadata.emplace(item.key(), item.value().get<std::string>());
            }
        } else {
            entries.push_back(detail::parse_header_entry(key, value, data.size(), where));
        }
    }

    // The tensors must tile the data buffer: sorted by range, each starts where the previous ended.
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
        return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
    });
    std::uint64_t covered = 0;  // data[0, covered) belongs to the tensors checked so far
    const auto file_offset = [&](std::uint64_t data_offset) { return std::to_string(8 + header_size + data_offset); };
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& entry = entries[i];
        if (entry.begin < covered) {
            throw SafetensorsError(where + ": tensor '" + entry.name + "' at data_offsets [" +
                                   std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                                   "] overlaps tensor '" + entries[i - 1].name + "', which ends at " +
                                   std::to_string(covered));
        }
        if (entry.begin > covered) {
            throw SafetensorsError(where + ": hole in the data buffer: bytes [" + std::to_string(covered) + ", " +
                                   std::to_string(entry.begin) + ") (file offset " + file_offset(covered) +
                                   ") before tensor '" + entry.name + "' belong to no tensor");
        }
        covered = entry.end;
    }
    if (covered != data.size()) {
        throw SafetensorsError(where + ": hole in the data buffer: bytes [" + std::to_string(covered) + ", " +
                               std::to_string(data.size()) + ") (file offset " + file_offset(covered) +
                               ") at its end belong to no tensor");
    }

    for (auto& entry : entries) {
        const auto bytes = data.subspan(entry.begin, entry.end - entry.begin);
        result.set(std::move(entry.name),
                   TensorData{entry.dtype, std::move(entry.shape), std::vector<std::byte>(bytes.begin(), bytes.end())});
    }
    result.source = std::move(source_name);
    return result;
}

namespace detail {
/// SafetensorsError "cannot read safetensors file '<path>': <what>[: <system reason>]".
[[noreturn]] inline void fail_read(const std::filesystem::path& path, const std::string& what, int error) {
    throw SafetensorsError("cannot read safetensors file '" + path.string() + "': " + what +
                           (error != 0 ? ": " + std::system_category().message(error) : std::string()));
}
using FileHandle = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;
/// `path` opened for reading, with its size; fail_read() if it cannot be opened or is not a regular file.
inline std::pair<FileHandle, std::uint64_t> open_regular_file(const std::filesystem::path& path) {
    FileHandle file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) fail_read(path, "cannot open", errno);
    struct stat status {};
    if (::fstat(::fileno(file.get()), &status) != 0) fail_read(path, "cannot stat", errno);
    if (!S_ISREG(status.st_mode)) fail_read(path, "not a regular file", 0);
    return {std::move(file), static_cast<std::uint64_t>(status.st_size)};
}
}  // namespace detail

/// Reads and parses a whole file (one read). Errors name the path. Before reading it checks that the
/// process can get twice the file's size (the file's bytes and the parsed tensors' copy, held at once):
/// SafetensorsError naming the file, the bytes needed and the bytes available otherwise
/// (simmim/core/memory.hpp); a std::bad_alloc while reading or parsing becomes a SafetensorsError
/// naming the file too.
inline TensorFile read_safetensors(const std::filesystem::path& path) {
    const auto fail = [&](const std::string& what, int error) { detail::fail_read(path, what, error); };
    const auto [file, file_size] = detail::open_regular_file(path);
    const std::uint64_t needed = file_size > std::numeric_limits<std::uint64_t>::max() / 2 ? file_size : 2 * file_size;
    if (auto shortfall = memory_shortfall("safetensors file '" + path.string() + "' (" + std::to_string(file_size) + " bytes)", needed))
        throw SafetensorsError(*shortfall);
    try {
        std::vector<std::byte> bytes(static_cast<std::size_t>(file_size));
        if (!bytes.empty()) {
            const std::size_t got = std::fread(bytes.data(), 1, bytes.size(), file.get());
            if (got != bytes.size()) {
                fail("short read (" + std::to_string(got) + " of " + std::to_string(bytes.size()) + " bytes)",
                     std::ferror(file.get()) ? errno : 0);
            }
        }
        return parse_safetensors(bytes, path.string());
    } catch (const std::bad_alloc&) {
        const MemoryAvailable available = available_memory();
        throw SafetensorsError("safetensors file '" + path.string() + "' (" + std::to_string(file_size) +
                               " bytes): out of memory: an allocation failed while reading what needs about " +
                               format_bytes(needed) + " (" +
                               (available.limited_by.empty() ? std::string("no memory limit known")
                                                             : format_bytes(available.bytes) + " available, limited by " +
                                                                   available.limited_by) +
                               ")");
    }
}

/// The "__metadata__" of a safetensors file, reading only its header (the 8-byte length and the JSON),
/// so it is cheap for a file of any size: what a caller reads to learn which model a weights file holds
/// before building one. Empty when the file has no metadata. SafetensorsError naming the path when the
/// file cannot be read, its header length is implausible or longer than the file, the header is not a
/// JSON object, or a metadata value is not a string. The tensors are not checked (read_safetensors does).
inline std::map<std::string, std::string> read_safetensors_metadata(const std::filesystem::path& path) {
    const std::string where = detail::source_label(path.string());
    const auto [file, file_size] = detail::open_regular_file(path);
    unsigned char length[8] = {};
    if (file_size < 8 || std::fread(length, 1, 8, file.get()) != 8)
        throw SafetensorsError(where + ": file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
    std::uint64_t header_size = 0;  // little-endian u64
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | length[i];
    if (header_size > max_header_bytes || header_size > file_size - 8)
        throw SafetensorsError(where + ": header length " + std::to_string(header_size) + " exceeds the " +
                               std::to_string(std::min<std::uint64_t>(max_header_bytes, file_size - 8)) + " bytes it can have");
    std::string text(static_cast<std::size_t>(header_size), '\0');
    if (header_size > 0 && std::fread(text.data(), 1, text.size(), file.get()) != text.size())
        detail::fail_read(path, "short read of the header", std::ferror(file.get()) ? errno : 0);
    std::vector<std::string> keys;
    const nlohmann::json header = detail::parse_header_json(text, where, keys);
    if (!header.is_object()) throw SafetensorsError(where + ": header is not a JSON object (found " + detail::json_label(header) + ")");
    std::map<std::string, std::string> metadata;
    const auto it = header.find("__metadata__");
    if (it == header.end()) return metadata;
    if (!it->is_object()) throw SafetensorsError(where + ": __metadata__ is not an object (found " + detail::json_label(*it) + ")");
    for (const auto& item : it->items()) {
        if (!item.value().is_string())
            throw SafetensorsError(where + ": __metadata__ value of key '" + item.key() + "' is not a string (found " +
                                   detail::json_label(item.value()) + ")");
        metadata.emplace(item.key(), item.value().get<std::string>());
    }
    return metadata;
}

/// The bytes of a safetensors file holding `file`'s tensors (in names() order) and metadata; the
/// header is compact JSON padded with spaces to a multiple of 8 bytes. Throws SafetensorsError if
/// a name or metadata string is not valid UTF-8.
inline std::vector<std::byte> serialize_safetensors(const TensorFile& file) {
    const auto quoted = [&](const std::string& text, const char* what) {
        try {
            return nlohmann::json(text).dump();
        } catch (const nlohmann::json::type_error&) {
            throw SafetensorsError("cannot write " + detail::source_label(file.source) + ": " + what + " " +
                                   nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                                   " is not valid UTF-8");
        }
    };
    std::string header = "{";
    if (!file.metadata.empty()) {
        header += "\"__metadata__\":{";
        for (const auto& [key, value] : file.metadata) {
            if (header.back() != '{') header += ',';
            header += quoted(key, "metadata key") + ":" + quoted(value, "metadata value");
        }
        header += "}";
    }
    std::uint64_t offset = 0;
    for (const std::string& name : file.names()) {
        const TensorData& tensor = file.at(name);
        if (header.size() > 1) header += ',';
        header += quoted(name, "tensor name") + ":{\"dtype\":\"" + std::string(dtype_name(tensor.dtype)) + "\",\"shape\":[";
        for (std::size_t i = 0; i < tensor.shape.size(); ++i) {
            if (i > 0) header += ',';
            header += std::to_string(tensor.shape[i]);
        }
        header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + tensor.bytes.size()) + "]}";
        offset += tensor.bytes.size();
    }
    header += "}";
    header.append((8 - header.size() % 8) % 8, ' ');
    if (header.size() > max_header_bytes) {
        throw SafetensorsError("cannot write " + detail::source_label(file.source) + ": header of " +
                               std::to_string(header.size()) + " bytes exceeds the limit of " +
                               std::to_string(max_header_bytes));
    }

    std::vector<std::byte> out;
    out.reserve(8 + header.size() + offset);
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((header.size() >> (8 * i)) & 0xFF));
    for (const char c : header) out.push_back(static_cast<std::byte>(c));
    for (const std::string& name : file.names()) {
        const auto& bytes = file.at(name).bytes;
        out.insert(out.end(), bytes.begin(), bytes.end());
    }
    return out;
}

namespace detail {

/// Writes `bytes` to `path` atomically: a temporary "<path>.tmp.<pid>" is written and fsynced, then
/// renamed over `path`, then the directory is fsynced. On failure the temporary is removed and an
/// existing file at `path` is left as it was (the message says so).
inline void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
    const auto error_text = [&](const std::string& what, int error) {
        return "cannot write safetensors file '" + path.string() + "': " + what + ": " +
               std::system_category().message(error) + " ('" + path.filename().string() + "' is left as it was)";
    };
    std::filesystem::path temporary = path;
    temporary += ".tmp." + std::to_string(::getpid());
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw SafetensorsError(error_text("cannot create '" + temporary.string() + "'", errno));
    const auto abandon = [&](const std::string& what, int error, bool close_fd) {
        if (close_fd) ::close(fd);
        ::unlink(temporary.c_str());
        throw SafetensorsError(error_text(what, error));
    };

    std::size_t written = 0;
    while (written < bytes.size()) {
        const ::ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            abandon("write to '" + temporary.string() + "' failed after " + std::to_string(written) + " of " +
                        std::to_string(bytes.size()) + " bytes",
                    n < 0 ? errno : EIO, true);
        }
        written += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) abandon("fsync of '" + temporary.string() + "' failed", errno, true);
    if (::close(fd) != 0) abandon("close of '" + temporary.string() + "' failed", errno, false);
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
        abandon("rename of '" + temporary.string() + "' failed", errno, false);
    }

    // Make the rename durable. EINVAL means the file system cannot sync directories.
    const auto sync_error_text = [&](const std::string& what, int error) {
        return "safetensors file '" + path.string() + "' written and renamed, but " + what + ": " + std::system_category().message(error);
    };
    const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) throw SafetensorsError(sync_error_text("cannot open directory '" + directory.string() + "' to sync it", errno));
    const int sync_result = ::fsync(dir_fd);
    const int sync_error = errno;
    ::close(dir_fd);
    if (sync_result != 0 && sync_error != EINVAL) {
        throw SafetensorsError(sync_error_text("fsync of directory '" + directory.string() + "' failed", sync_error));
    }
}

}  // namespace detail

/// Removes the temporaries "<path>.tmp.<pid>" that write_file_atomically left behind in a process
/// that died during a write (SIGKILL, power loss) and that no longer runs: a file is removed only
/// when <pid> is all digits and kill(<pid>, 0) fails with ESRCH (no such process), so the temporary
/// of a live writer (this process included) is kept. Returns the removed paths. Errors listing the
/// directory or removing a file are ignored (the files are garbage, not state).
inline std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::vector<fs::path> removed;
    const fs::path directory = path.has_parent_path() ? path.parent_path() : fs::path(".");
    const std::string prefix = path.filename().string() + ".tmp.";
    std::error_code ec;
    fs::directory_iterator it(directory, ec);
    if (ec) return removed;
    for (; it != fs::directory_iterator(); it.increment(ec)) {
        if (ec) break;
        const std::string name = it->path().filename().string();
        if (!name.starts_with(prefix) || name.size() == prefix.size()) continue;
        const std::string_view digits = std::string_view(name).substr(prefix.size());
        ::pid_t pid = 0;
        const auto [end, parse_error] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
        if (parse_error != std::errc{} || end != digits.data() + digits.size() || pid <= 0) continue;
        if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge (EPERM)
        std::error_code remove_error;
        if (it->is_regular_file(remove_error) && fs::remove(it->path(), remove_error)) removed.push_back(it->path());
    }
    return removed;
}

/// Writes `file` to `path` atomically (see detail::write_file_atomically): readers see either the
/// old file or the complete new one. Errors (cannot create, short write, ENOSPC, rename) throw
/// SafetensorsError naming the path and the system's reason; the temporary is then removed and an
/// existing file at `path` is untouched.
inline void write_safetensors(const std::filesystem::path& path, const TensorFile& file) {
    detail::write_file_atomically(path, serialize_safetensors(file));
}

}  // namespace simmim::io
