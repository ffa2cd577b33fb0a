// Tests of simmim/io/safetensors.hpp. Oracles: byte buffers assembled by hand from literal JSON,
// closed-form decoding of every F16 and BF16 bit pattern, the values that were written, and the
// file system's own view of what is on disk.
#include <simmim/io/safetensors.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "skip.hpp"

namespace {

using namespace simmim::io;
namespace fs = std::filesystem;

const std::string kSource = "bad.safetensors";

/// A safetensors file assembled by hand: u64 little-endian header length, header text, data.
std::vector<std::byte> assemble(std::string_view header, const std::vector<std::uint8_t>& data = {}) {
    std::vector<std::byte> bytes;
    std::uint64_t length = header.size();
    for (int i = 0; i < 8; ++i, length >>= 8) bytes.push_back(static_cast<std::byte>(length & 0xFF));
    for (const char c : header) bytes.push_back(static_cast<std::byte>(c));
    for (const std::uint8_t b : data) bytes.push_back(static_cast<std::byte>(b));
    return bytes;
}

std::vector<std::byte> raw_bytes(const std::vector<std::uint8_t>& values) {
    std::vector<std::byte> bytes;
    for (const std::uint8_t v : values) bytes.push_back(static_cast<std::byte>(v));
    return bytes;
}

std::vector<std::byte> read_file_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    const std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> bytes(chars.size());
    if (!chars.empty()) std::memcpy(bytes.data(), chars.data(), chars.size());
    return bytes;
}

std::vector<std::string> directory_listing(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

/// A fresh directory removed at the end of the test.
struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("simmim_test_safetensors_" + std::to_string(::getpid()));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ignored);
        fs::remove_all(path, ignored);
    }
};

/// The value of IEEE binary16 `bits`, computed from the definition.
double half_value(std::uint16_t bits) {
    const int sign = bits >> 15, exponent = (bits >> 10) & 0x1F, mantissa = bits & 0x3FF;
    double magnitude;
    if (exponent == 0x1F) magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity() : std::nan("");
    else if (exponent == 0) magnitude = std::ldexp(mantissa, -24);             // m / 2^10 * 2^-14
    else magnitude = std::ldexp(1024 + mantissa, exponent - 15 - 10);         // (1 + m / 2^10) * 2^(e-15)
    return sign ? -magnitude : magnitude;
}

/// The value of bfloat16 `bits` (8 exponent bits, bias 127, 7 mantissa bits), from the definition.
double bfloat16_value(std::uint16_t bits) {
    const int sign = bits >> 15, exponent = (bits >> 7) & 0xFF, mantissa = bits & 0x7F;
    double magnitude;
    if (exponent == 0xFF) magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity() : std::nan("");
    else if (exponent == 0) magnitude = std::ldexp(mantissa, -126 - 7);
    else magnitude = std::ldexp(128 + mantissa, exponent - 127 - 7);
    return sign ? -magnitude : magnitude;
}

bool same_value(double a, double b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return a == b && std::signbit(a) == std::signbit(b);
}

/// All 65536 bit patterns of a 16-bit dtype as one tensor.
TensorData all_16_bit_patterns(DType dtype) {
    TensorData tensor{dtype, {65536}, {}};
    for (std::uint32_t bits = 0; bits < 65536; ++bits) {
        tensor.bytes.push_back(static_cast<std::byte>(bits & 0xFF));
        tensor.bytes.push_back(static_cast<std::byte>(bits >> 8));
    }
    return tensor;
}

/// A file with every dtype, a scalar, zero-size tensors and metadata; the last tensor is non-empty.
TensorFile sample_file() {
    TensorFile file;
    file.metadata = {{"format", "pt"}, {"note", "caf\xc3\xa9 \xe2\x9c\x93"}};
    const std::array<double, 6> f64 = {1.5, -2.25, 1e300, -0.0, std::numeric_limits<double>::denorm_min(), 3.0};
    file.set<double>("f64", f64, {2, 3});
    const std::array<float, 1> scalar = {0.1f};
    file.set<float>("scalar", scalar, {});
    file.set("empty", TensorData{DType::F32, {0, 3}, {}});
    const std::array<std::int64_t, 4> i64 = {std::numeric_limits<std::int64_t>::min(), -1, 0,
                                             std::numeric_limits<std::int64_t>::max()};
    file.set<std::int64_t>("i64", i64, {4});
    const std::array<std::int32_t, 4> i32 = {-7, 0, 7, 2147483647};
    file.set<std::int32_t>("i32", i32, {2, 2});
    file.set("empty_i64", TensorData{DType::I64, {2, 0, 5}, {}});
    const std::array<std::int16_t, 3> i16 = {-32768, 1, 32767};
    file.set<std::int16_t>("i16", i16, {3});
    const std::array<std::int8_t, 2> i8 = {-128, 127};
    file.set<std::int8_t>("i8", i8, {2, 1});
    const std::array<std::uint8_t, 3> u8 = {0, 128, 255};
    file.set<std::uint8_t>("u8", u8, {3});
    const std::array<bool, 4> flags = {true, false, false, true};
    file.set<bool>("bool", flags, {2, 2});
    file.set("f16", TensorData{DType::F16, {3}, raw_bytes({0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B})});   // 1, -2, 65504
    file.set("bf16", TensorData{DType::BF16, {2}, raw_bytes({0x80, 0x3F, 0x49, 0xC0})});            // 1, -3.140625
    return file;
}

#define CHECK_REJECTS(file_bytes, matcher)                                                          \
    do {                                                                                            \
        CHECK_THROWS_AS(parse_safetensors(file_bytes, kSource), SafetensorsError);                  \
        CHECK_THROWS_WITH(parse_safetensors(file_bytes, kSource), Catch::Contains(kSource) && matcher); \
    } while (false)

}  // namespace

TEST_CASE("safetensors: dtype names and sizes", "[safetensors]") {
    const std::array<std::tuple<DType, const char*, std::size_t>, 10> table = {{{DType::F64, "F64", 8},
                                                                               {DType::F32, "F32", 4},
                                                                               {DType::F16, "F16", 2},
                                                                               {DType::BF16, "BF16", 2},
                                                                               {DType::I64, "I64", 8},
                                                                               {DType::I32, "I32", 4},
                                                                               {DType::I16, "I16", 2},
                                                                               {DType::I8, "I8", 1},
                                                                               {DType::U8, "U8", 1},
                                                                               {DType::BOOL, "BOOL", 1}}};
    for (const auto& [dtype, name, size] : table) {
        CHECK(dtype_name(dtype) == name);
        CHECK(dtype_size(dtype) == size);
        CHECK(dtype_from_name(name) == dtype);
    }
    CHECK_FALSE(dtype_from_name("F8_E4M3").has_value());
    CHECK_FALSE(dtype_from_name("f32").has_value());
}

TEST_CASE("safetensors: F16 and BF16 decode exactly, every bit pattern", "[safetensors]") {
    const TensorData halves = all_16_bit_patterns(DType::F16);
    const std::vector<float> half_floats = halves.to<float>();
    const std::vector<double> half_doubles = halves.to<double>();
    const TensorData bfloats = all_16_bit_patterns(DType::BF16);
    const std::vector<float> bf_floats = bfloats.to<float>();
    int mismatches = 0;
    for (std::uint32_t bits = 0; bits < 65536; ++bits) {
        const auto b = static_cast<std::uint16_t>(bits);
        if (!same_value(half_floats[bits], half_value(b)) || !same_value(half_doubles[bits], half_value(b)) ||
            !same_value(bf_floats[bits], bfloat16_value(b))) {
            if (++mismatches < 5) FAIL_CHECK("bit pattern " << bits);
        }
    }
    CHECK(mismatches == 0);
    // A few values known by heart.
    CHECK(half_floats[0x3C00] == 1.0f);
    CHECK(half_floats[0x7BFF] == 65504.0f);
    CHECK(half_floats[0x0001] == std::ldexp(1.0f, -24));
    CHECK(half_floats[0x3555] == 0.333251953125f);
    CHECK(bf_floats[0x3F80] == 1.0f);
    CHECK(bf_floats[0xC049] == -3.140625f);
}

TEST_CASE("safetensors: round trip of every dtype, scalars, zero-size tensors and metadata", "[safetensors]") {
    const TensorFile original = sample_file();
    const std::vector<std::byte> bytes = serialize_safetensors(original);
    const TensorFile parsed = parse_safetensors(bytes, "memory");

    CHECK(parsed.names() == original.names());
    CHECK(parsed.metadata == original.metadata);
    CHECK(parsed.source == "memory");
    for (const std::string& name : original.names()) {
        INFO(name);
        CHECK(parsed.at(name).dtype == original.at(name).dtype);
        CHECK(parsed.at(name).shape == original.at(name).shape);
        CHECK(parsed.at(name).bytes == original.at(name).bytes);
    }

    // Values through the typed accessors, against what was stored.
    const std::vector<double> f64 = parsed.get<double>("f64", {2, 3});
    CHECK(f64[0] == 1.5);
    CHECK(f64[2] == 1e300);
    CHECK(std::signbit(f64[3]));
    CHECK(f64[4] == std::numeric_limits<double>::denorm_min());
    CHECK(parsed.get<float>("scalar", std::span<const std::int64_t>{}) == std::vector<float>{0.1f});
    CHECK(parsed.at("scalar").numel() == 1);
    CHECK(parsed.get<float>("empty", {0, 3}).empty());
    CHECK(parsed.at("empty_i64").numel() == 0);
    CHECK(parsed.get<std::int64_t>("i64", {4}) ==
          std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), -1, 0,
                                    std::numeric_limits<std::int64_t>::max()});
    CHECK(parsed.get<int>("i32", {2, 2}) == std::vector<int>{-7, 0, 7, 2147483647});
    CHECK(parsed.get<int>("i16", {3}) == std::vector<int>{-32768, 1, 32767});
    CHECK(parsed.get<int>("i8", {2, 1}) == std::vector<int>{-128, 127});
    CHECK(parsed.get<int>("u8", {3}) == std::vector<int>{0, 128, 255});
    CHECK(parsed.get<std::uint8_t>("bool", {2, 2}) == std::vector<std::uint8_t>{1, 0, 0, 1});
    CHECK(parsed.get<float>("f16", {3}) == std::vector<float>{1.0f, -2.0f, 65504.0f});
    CHECK(parsed.get<double>("bf16", {2}) == std::vector<double>{1.0, -3.140625});

    // Through the file system.
    TempDir dir;
    const fs::path path = dir.path / "sample.safetensors";
    write_safetensors(path, original);
    CHECK(read_file_bytes(path) == bytes);
    const TensorFile from_disk = read_safetensors(path);
    CHECK(from_disk.names() == original.names());
    CHECK(from_disk.source == path.string());
    for (const std::string& name : original.names()) CHECK(from_disk.at(name).bytes == original.at(name).bytes);
}

TEST_CASE("safetensors: serialized layout matches the format", "[safetensors]") {
    const TensorFile file = sample_file();
    const std::vector<std::byte> bytes = serialize_safetensors(file);
    REQUIRE(bytes.size() >= 8);
    std::uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = header_size * 256 + std::to_integer<std::uint64_t>(bytes[i]);
    CHECK(header_size % 8 == 0);
    REQUIRE(8 + header_size <= bytes.size());
    const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, header_size);
    const std::size_t close = header.find_last_of('}');
    CHECK(header.size() - (close + 1) < 8);
    CHECK(header.find_first_not_of(' ', close + 1) == std::string::npos);

    // Offsets are consecutive in insertion order and the data buffer is the tensors' bytes, concatenated.
    const nlohmann::json json = nlohmann::json::parse(header);
    CHECK(json.at("__metadata__").at("format") == "pt");
    std::uint64_t offset = 0;
    std::vector<std::byte> expected_data;
    for (const std::string& name : file.names()) {
        const TensorData& tensor = file.at(name);
        CHECK(json.at(name).at("dtype") == dtype_name(tensor.dtype));
        CHECK(json.at(name).at("shape").get<std::vector<std::int64_t>>() == tensor.shape);
        CHECK(json.at(name).at("data_offsets") == nlohmann::json::array({offset, offset + tensor.bytes.size()}));
        offset += tensor.bytes.size();
        expected_data.insert(expected_data.end(), tensor.bytes.begin(), tensor.bytes.end());
    }
    CHECK(std::vector<std::byte>(bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_size), bytes.end()) == expected_data);
}

TEST_CASE("safetensors: header is padded with spaces to a multiple of 8 for every length", "[safetensors]") {
    for (std::size_t length = 1; length <= 24; ++length) {
        TensorFile file;
        const std::array<std::uint8_t, 1> value = {42};
        file.set<std::uint8_t>(std::string(length, 'x'), value, {1});
        const std::vector<std::byte> bytes = serialize_safetensors(file);
        std::uint64_t header_size = 0;
        for (int i = 7; i >= 0; --i) header_size = header_size * 256 + std::to_integer<std::uint64_t>(bytes[i]);
        const std::string unpadded = "{\"" + std::string(length, 'x') + "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
        INFO("name length " << length);
        CHECK(header_size == (unpadded.size() + 7) / 8 * 8);
        CHECK(std::string(reinterpret_cast<const char*>(bytes.data()) + 8, header_size) ==
              unpadded + std::string(header_size - unpadded.size(), ' '));
        CHECK(bytes.size() == 8 + header_size + 1);
        CHECK(parse_safetensors(bytes, "").get<int>(std::string(length, 'x'), {1}) == std::vector<int>{42});
    }
}

TEST_CASE("safetensors: a hand-assembled file parses to the expected values", "[safetensors]") {
    // Not padded, keys out of data order, whitespace inside: all allowed by the format.
    const std::string header = R"({"__metadata__": {"format": "pt"},
        "b": {"dtype": "I32", "shape": [2], "data_offsets": [8, 16]},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "d": {"dtype": "F64", "shape": [1], "data_offsets": [20, 28]},
        "h": {"dtype": "F16", "shape": [], "data_offsets": [16, 18]},
        "g": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [18, 20]}})";
    const std::vector<std::uint8_t> data = {
        0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0xC0,  // a: 1.5f (0x3FC00000), -2.0f (0xC0000000)
        0x07, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF,  // b: 7, -1
        0x55, 0x35,                                      // h: half 0x3555 = 0.333251953125
        0x49, 0xC0,                                      // g: bfloat16 0xC049 = -3.140625
        0x9A, 0x99, 0x99, 0x99, 0x99, 0x99, 0xB9, 0x3F,  // d: 0.1 (0x3FB999999999999A)
    };
    const TensorFile file = parse_safetensors(assemble(header, data), "hand");
    CHECK(file.names() == std::vector<std::string>{"a", "b", "h", "g", "d"});
    CHECK(file.metadata == std::map<std::string, std::string>{{"format", "pt"}});
    CHECK(file.get<float>("a", {2}) == std::vector<float>{1.5f, -2.0f});
    CHECK(file.get<std::int32_t>("b", {2}) == std::vector<std::int32_t>{7, -1});
    CHECK(file.at("b").dtype == DType::I32);
    CHECK(file.at("h").shape.empty());
    CHECK(file.get<double>("h", std::span<const std::int64_t>{}) == std::vector<double>{0.333251953125});
    CHECK(file.get<float>("g", {1, 1}) == std::vector<float>{-3.140625f});
    CHECK(file.get<double>("d", {1}) == std::vector<double>{0.1});
    CHECK(file.get<float>("d", {1}) == std::vector<float>{0.1f});

    // An empty file: "{}" and no data.
    CHECK(parse_safetensors(assemble("{}"), "").names().empty());
}

TEST_CASE("safetensors: every malformed header is rejected naming the tensor or offset", "[safetensors]") {
    using Catch::Contains;
    const auto entry = [](const std::string& name, const std::string& body) {
        return "{\"" + name + "\":" + body + "}";
    };
    const std::vector<std::uint8_t> eight(8, 0);

    SECTION("file shorter than 8 bytes") {
        for (std::size_t size = 0; size < 8; ++size) {
            const std::vector<std::byte> bytes(size, std::byte{0});
            CHECK_REJECTS(bytes, Contains(std::to_string(size) + " bytes"));
        }
    }
    SECTION("header length larger than the file names both numbers") {
        std::vector<std::byte> bytes = assemble("{}          ");  // 12 bytes after the prefix
        bytes[0] = std::byte{100};
        CHECK_REJECTS(bytes, Contains("100") && Contains("12"));
    }
    SECTION("header length above the 100 MB limit") {
        std::vector<std::byte> bytes = assemble("{}");
        const std::uint64_t huge = 100'000'001;
        for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>((huge >> (8 * i)) & 0xFF);
        CHECK_REJECTS(bytes, Contains("100000001") && Contains("limit"));
        for (int i = 0; i < 8; ++i) bytes[i] = std::byte{0xFF};
        CHECK_REJECTS(bytes, Contains("18446744073709551615"));
    }
    SECTION("invalid JSON reports the byte position") {
        // The 'x' is header byte 6 (1-based), file offset 8 + 5 = 13.
        CHECK_REJECTS(assemble(R"({"a":x})"), Contains("header byte 6") && Contains("file offset 13"));
        CHECK_REJECTS(assemble(R"({"a": {"dtype": "F32")"), Contains("not valid JSON"));
        CHECK_REJECTS(assemble("{\"\xff\":1}"), Contains("not valid JSON"));  // invalid UTF-8
        CHECK_REJECTS(assemble(""), Contains("not valid JSON"));
    }
    SECTION("header not an object") {
        CHECK_REJECTS(assemble("[1, 2]"), Contains("not a JSON object"));
        CHECK_REJECTS(assemble("42"), Contains("not a JSON object"));
    }
    SECTION("entry not an object, missing or mistyped fields") {
        CHECK_REJECTS(assemble(entry("w", "3")), Contains("'w'") && Contains("not an object"));
        CHECK_REJECTS(assemble(entry("w", R"({"shape": [2], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("dtype"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("shape"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [2]})"), eight),
                      Contains("'w'") && Contains("data_offsets"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": 5, "shape": [2], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("dtype"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": "2", "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("shape"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("shape[0]"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": [0]})"), eight),
                      Contains("'w'") && Contains("data_offsets"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": "0-8"})"), eight),
                      Contains("'w'") && Contains("data_offsets"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]})"), eight),
                      Contains("'w'") && Contains("data_offsets"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]})"), eight),
                      Contains("'w'") && Contains("data_offsets"));
    }
    SECTION("unknown dtype") {
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("F8_E4M3"));
    }
    SECTION("negative dimension or byte-count overflow") {
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("-1"));
        // numel itself overflows 64 bits
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("overflow"));
        // numel = 2^62 fits, numel * 4 bytes does not
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("overflow"));
        // a zero dimension makes the product 0 whatever the others are, which is fine: 0 bytes.
        CHECK(parse_safetensors(assemble(entry("w", R"({"dtype": "F32", "shape": [0, 9223372036854775807], "data_offsets": [0, 0]})")), "")
                  .at("w").numel() == 0);
        // a dimension above int64 is rejected
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "U8", "shape": [9223372036854775808], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("shape[0]"));
    }
    SECTION("data_offsets out of order or beyond the buffer") {
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [1], "data_offsets": [8, 4]})"), eight),
                      Contains("'w'") && Contains("[8, 4]"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]})"), eight),
                      Contains("'w'") && Contains("[0, 16]"));
    }
    SECTION("byte length does not match the shape") {
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("12"));
    }
    SECTION("overlaps and holes") {
        const std::vector<std::uint8_t> twelve(12, 0);
        CHECK_REJECTS(assemble(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                   "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})", twelve),
                      Contains("'b'") && Contains("'a'") && Contains("overlaps"));
        CHECK_REJECTS(assemble(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                   "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}})", twelve),
                      Contains("'b'") && Contains("[4, 8)"));
        // a zero-size tensor inside another one
        CHECK_REJECTS(assemble(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                   "z": {"dtype": "U8", "shape": [0], "data_offsets": [4, 4]}})", eight),
                      Contains("'z'") && Contains("overlaps"));
        // the same bytes claimed twice
        CHECK_REJECTS(assemble(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                   "b": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})", eight),
                      Contains("'b'") && Contains("overlaps"));
        // trailing bytes that belong to no tensor, and data with no tensor at all
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "U8", "shape": [4], "data_offsets": [0, 4]})"), eight),
                      Contains("[4, 8)") && Contains("file offset"));
        CHECK_REJECTS(assemble("{}", eight), Contains("[0, 8)"));
    }
    SECTION("__metadata__ must map strings to strings") {
        CHECK_REJECTS(assemble(R"({"__metadata__": {"epoch": 3}})"), Contains("__metadata__") && Contains("'epoch'"));
        CHECK_REJECTS(assemble(R"({"__metadata__": ["a"]})"), Contains("__metadata__"));
        CHECK_REJECTS(assemble(R"({"__metadata__": {"a": {"b": "c"}}})"), Contains("'a'"));
    }
    SECTION("duplicate keys and deep nesting") {
        CHECK_REJECTS(assemble(R"({"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                   "w": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})", eight),
                      Contains("duplicate") && Contains("'w'"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "U8", "dtype": "U8", "shape": [8], "data_offsets": [0, 8]})"), eight),
                      Contains("duplicate") && Contains("'w'"));
        CHECK_REJECTS(assemble(entry("w", R"({"dtype": "U8", "shape": [[8]], "data_offsets": [0, 8]})"), eight),
                      Contains("'w'") && Contains("deeper"));
        CHECK_REJECTS(assemble(std::string(100000, '[') + std::string(100000, ']')), Contains("deeper"));
    }
}

TEST_CASE("safetensors: every truncation and single-byte corruption is handled", "[safetensors]") {
    const std::vector<std::byte> bytes = serialize_safetensors(sample_file());
    REQUIRE(bytes.size() < 2000);
    for (std::size_t length = 0; length < bytes.size(); ++length) {
        const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length));
        CHECK_THROWS_AS(parse_safetensors(prefix, "truncated"), SafetensorsError);
    }
    // Flipping bits anywhere may give a valid file or a SafetensorsError, never anything else;
    // a file that parses is self-consistent.
    for (std::size_t position = 0; position < bytes.size(); ++position) {
        for (const std::uint8_t flip : {std::uint8_t{0x01}, std::uint8_t{0x20}, std::uint8_t{0xFF}}) {
            std::vector<std::byte> corrupted = bytes;
            corrupted[position] ^= std::byte{flip};
            try {
                const TensorFile file = parse_safetensors(corrupted, "corrupted");
                for (const std::string& name : file.names()) {
                    const TensorData& tensor = file.at(name);
                    CHECK(tensor.bytes.size() == tensor.numel() * dtype_size(tensor.dtype));
                }
            } catch (const SafetensorsError&) {
            }
        }
    }
}

TEST_CASE("safetensors: conversions are exact or refuse", "[safetensors]") {
    const auto f64 = [](std::vector<double> values) {
        const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(values.size())};
        return TensorData::from<double>(values, shape);
    };
    const auto i64 = [](std::vector<std::int64_t> values) {
        return TensorData::from<std::int64_t>(values, {static_cast<std::int64_t>(values.size())});
    };
    CHECK(f64({-3.0, 7.0, -2147483648.0}).to<std::int32_t>() == std::vector<std::int32_t>{-3, 7, -2147483647 - 1});
    CHECK_THROWS_AS(f64({2.5}).to<std::int32_t>(), SafetensorsError);
    CHECK_THROWS_AS(f64({std::nan("")}).to<std::int64_t>(), SafetensorsError);
    CHECK_THROWS_AS(f64({std::numeric_limits<double>::infinity()}).to<std::int64_t>(), SafetensorsError);
    CHECK_THROWS_AS(f64({2147483648.0}).to<std::int32_t>(), SafetensorsError);
    CHECK_THROWS_AS(f64({-1.0}).to<std::uint32_t>(), SafetensorsError);
    CHECK(f64({-0x1p63}).to<std::int64_t>() == std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min()});
    CHECK_THROWS_AS(f64({0x1p63}).to<std::int64_t>(), SafetensorsError);
    CHECK(f64({0x1p64 - 2048}).to<std::uint64_t>() == std::vector<std::uint64_t>{18446744073709549568ull});
    CHECK_THROWS_AS(f64({0x1p64}).to<std::uint64_t>(), SafetensorsError);
    CHECK(f64({0.1, 1e300}).to<float>() == std::vector<float>{0.1f, std::numeric_limits<float>::infinity()});

    CHECK_THROWS_AS(i64({-1}).to<std::uint8_t>(), SafetensorsError);
    CHECK_THROWS_AS(i64({256}).to<std::uint8_t>(), SafetensorsError);
    CHECK(i64({255, 0}).to<std::uint8_t>() == std::vector<std::uint8_t>{255, 0});
    CHECK(i64({(std::int64_t{1} << 53) + 1}).to<double>() == std::vector<double>{9007199254740992.0});  // ties to even
    CHECK_THROWS_WITH(i64({7, 300}).to<std::int8_t>(), Catch::Contains("element 1") && Catch::Contains("300"));

    const TensorData flags{DType::BOOL, {4}, raw_bytes({0, 1, 2, 255})};
    CHECK(flags.to<int>() == std::vector<int>{0, 1, 1, 1});
    CHECK(flags.to<float>() == std::vector<float>{0, 1, 1, 1});

    const TensorData inconsistent{DType::F32, {3}, raw_bytes({0, 0, 0, 0})};
    CHECK_THROWS_AS(inconsistent.to<float>(), SafetensorsError);
    // Negative dimensions are refused even where unsigned arithmetic would not overflow.
    for (const auto& shape : {std::vector<std::int64_t>{-1}, std::vector<std::int64_t>{0, -1}}) {
        const TensorData negative{DType::U8, shape, {}};
        CHECK_THROWS_AS(negative.numel(), SafetensorsError);
        TensorFile file;
        CHECK_THROWS_AS(file.set("negative", negative), SafetensorsError);
    }
}

TEST_CASE("safetensors: TensorFile set, replace, checked access", "[safetensors]") {
    TensorFile file;
    file.source = "model.safetensors";
    const std::array<float, 6> six = {1, 2, 3, 4, 5, 6};
    const std::array<float, 2> two = {7, 8};
    file.set<float>("w", six, {2, 3});
    file.set<float>("b", two, {2});
    file.set<float>("w", std::span<const float>(six).first(2), {1, 2});  // replace keeps the position
    CHECK(file.names() == std::vector<std::string>{"w", "b"});
    CHECK(file.get<float>("w", {1, 2}) == std::vector<float>{1, 2});
    CHECK(file.contains("b"));
    CHECK_FALSE(file.contains("c"));

    CHECK_THROWS_WITH(file.at("nope"), Catch::Contains("no tensor 'nope'") && Catch::Contains("model.safetensors"));
    CHECK_THROWS_WITH(file.get<float>("b", {1, 2}),
                      Catch::Contains("'b'") && Catch::Contains("[1, 2]") && Catch::Contains("[2]") &&
                          Catch::Contains("model.safetensors"));
    const std::vector<std::int64_t> expected = {2};
    CHECK(file.get<double>("b", expected) == std::vector<double>{7, 8});
    CHECK(file.get<std::int32_t>("w", {1, 2}) == std::vector<std::int32_t>{1, 2});  // integral floats convert
    const std::array<float, 1> half = {0.5f};
    file.set<float>("frac", half, {});
    CHECK_THROWS_WITH(file.get<std::int32_t>("frac", std::span<const std::int64_t>{}),
                      Catch::Contains("'frac'") && Catch::Contains("0.5") && Catch::Contains("model.safetensors"));

    CHECK_THROWS_WITH(file.set<float>("bad", six, {4}), Catch::Contains("[4]") && Catch::Contains("6 values"));
    CHECK_THROWS_WITH(file.set("bad", TensorData{DType::F32, {3}, raw_bytes({0, 0, 0, 0})}), Catch::Contains("'bad'"));
    CHECK_THROWS_WITH(file.set("__metadata__", TensorData{DType::U8, {}, raw_bytes({0})}), Catch::Contains("__metadata__"));
    CHECK(file.names() == std::vector<std::string>{"w", "b", "frac"});

    // Names and metadata must be valid UTF-8 to be written.
    TensorFile bad_name;
    bad_name.set("\xff", TensorData{DType::U8, {}, raw_bytes({1})});
    CHECK_THROWS_AS(serialize_safetensors(bad_name), SafetensorsError);
}

TEST_CASE("safetensors: atomic write errors name the path and keep the old file", "[safetensors]") {
    TempDir dir;
    TensorFile old_content;
    const std::array<std::int32_t, 2> old_values = {1, 2};
    old_content.set<std::int32_t>("old", old_values, {2});
    TensorFile new_content;
    const std::vector<double> big(8192, 0.25);  // 64 KiB of data
    new_content.set<double>("new", big, {8192});

    SECTION("overwrite replaces the file and leaves no temporary") {
        const fs::path path = dir.path / "model.safetensors";
        write_safetensors(path, old_content);
        write_safetensors(path, new_content);
        CHECK(read_safetensors(path).get<double>("new", {8192}) == big);
        CHECK(directory_listing(dir.path) == std::vector<std::string>{"model.safetensors"});
    }
    SECTION("directory that does not exist") {
        const fs::path path = dir.path / "missing" / "model.safetensors";
        CHECK_THROWS_AS(write_safetensors(path, new_content), SafetensorsError);
        CHECK_THROWS_WITH(write_safetensors(path, new_content),
                          Catch::Contains(path.string()) && Catch::Contains(std::strerror(ENOENT)));
        CHECK_FALSE(fs::exists(dir.path / "missing"));
    }
    SECTION("target is a directory: rename fails, temporary removed, target untouched") {
        const fs::path path = dir.path / "target";
        fs::create_directory(path);
        std::ofstream(path / "keep.txt") << "keep";
        CHECK_THROWS_WITH(write_safetensors(path, new_content), Catch::Contains(path.string()));
        CHECK(directory_listing(dir.path) == std::vector<std::string>{"target"});
        CHECK(directory_listing(path) == std::vector<std::string>{"keep.txt"});
    }
    SECTION("short write (file size limit): old file intact, temporary removed") {
        const fs::path path = dir.path / "model.safetensors";
        write_safetensors(path, old_content);
        const std::vector<std::byte> before = read_file_bytes(path);

        rlimit saved{};
        REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
        const auto saved_handler = std::signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of a signal
        rlimit limited = saved;
        limited.rlim_cur = 4096;
        std::string message;
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
        try {
            write_safetensors(path, new_content);
        } catch (const SafetensorsError& error) {
            message = error.what();
        }
        ::setrlimit(RLIMIT_FSIZE, &saved);
        std::signal(SIGXFSZ, saved_handler);

        CHECK_THAT(message, Catch::Contains(path.string()) && Catch::Contains(std::strerror(EFBIG)));
        CHECK(read_file_bytes(path) == before);
        CHECK(directory_listing(dir.path) == std::vector<std::string>{"model.safetensors"});
    }
    SECTION("reading a missing file or a directory names the path") {
        const fs::path path = dir.path / "absent.safetensors";
        CHECK_THROWS_WITH(read_safetensors(path), Catch::Contains(path.string()) && Catch::Contains(std::strerror(ENOENT)));
        CHECK_THROWS_WITH(read_safetensors(dir.path), Catch::Contains(dir.path.string()) && Catch::Contains("regular file"));
    }
}

// Split from the case above: root ignores directory permissions, so as root the write is made as "nobody".
TEST_CASE("safetensors: a write into a read-only directory names the path and keeps the old file", "[safetensors]") {
    TempDir dir;
    TensorFile old_content;
    const std::array<std::int32_t, 2> old_values = {1, 2};
    old_content.set<std::int32_t>("old", old_values, {2});
    TensorFile new_content;
    const std::vector<double> big(8192, 0.25);
    new_content.set<double>("new", big, {8192});
    const fs::path locked = dir.path / "locked";
    fs::create_directory(locked);
    const fs::path path = locked / "model.safetensors";
    write_safetensors(path, old_content);
    const std::vector<std::byte> before = read_file_bytes(path);
    fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
    // root ignores permissions: it writes as the unprivileged user "nobody" (65534) for the time of the write
    struct EffectiveUser {
        uid_t saved = ::geteuid();
        bool changed = saved == 0 && ::seteuid(65534) == 0;
        ~EffectiveUser() {
            if (changed) (void)::seteuid(saved);
        }
    };
    std::string message;
    bool enforced = false;
    {
        const EffectiveUser user;
        enforced = !std::ofstream(locked / "probe");
        if (enforced) {
            try {
                write_safetensors(path, new_content);
            } catch (const SafetensorsError& error) {
                message = error.what();
            }
        }
    }
    if (!enforced) {
        fs::remove(locked / "probe");
        fs::permissions(locked, fs::perms::owner_all, fs::perm_options::replace);
        SIMMIM_SKIP("directory permissions are not enforced for this user, and it cannot act as another");
    }
    CHECK_THAT(message, Catch::Contains(path.string()) && Catch::Contains(std::strerror(EACCES)));
    CHECK(read_file_bytes(path) == before);
    fs::permissions(locked, fs::perms::owner_all, fs::perm_options::replace);
}

TEST_CASE("safetensors: the PyTorch-written fixture parses", "[safetensors]") {
#ifdef SIMMIM_SOURCE_DIR
    const fs::path path = fs::path(SIMMIM_SOURCE_DIR) / "tests" / "fixtures" / "vit_tiny.safetensors";
#else
    const fs::path path = fs::path("tests") / "fixtures" / "vit_tiny.safetensors";
#endif
    // the fixture is committed (tests/fixtures/, made by tests/pytorch/): its absence is a broken checkout, not a skip
    REQUIRE(fs::exists(path));
    const TensorFile file = read_safetensors(path);
    REQUIRE(file.contains("loss"));
    CHECK(file.at("loss").dtype == DType::F64);
    CHECK(file.at("loss").shape.empty());
    const std::vector<double> loss = file.get<double>("loss", {});
    CHECK(std::isfinite(loss.at(0)));
    CHECK(loss.at(0) > 0.0);
    CHECK(file.at("images").dtype == DType::F64);
    CHECK(file.at("images").shape == std::vector<std::int64_t>{2, 3, 16, 16});
    // The fixture round-trips through our writer byte for byte in content.
    const TensorFile again = parse_safetensors(serialize_safetensors(file), "again");
    CHECK(again.names() == file.names());
    CHECK(again.metadata == file.metadata);
    for (const std::string& name : file.names()) {
        INFO(name);
        CHECK((again.at(name).bytes == file.at(name).bytes));  // not decomposed: no 500 KB expansions
    }
}
