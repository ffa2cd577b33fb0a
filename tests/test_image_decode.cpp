// tests/test_image_decode.cpp: JPEG / PNG decoding (simmim/data/image_decode.hpp) and the image
// folder's limits.
//
// Oracles: PNG files are built here byte by byte (chunks, CRCs, scanline packing, Adam7 passes, zlib
// only for the deflate stream), so libpng's output is checked against sample values chosen by the
// test and the PNG specification's conversions (bit-depth scaling, palette lookup, tRNS to alpha,
// 16-bit high byte). JPEGs are written with libjpeg in flat colours (a flat colour survives the DCT
// within a few levels) and a progressive file must decode exactly like the baseline file holding the
// same coefficients.
#include <catch2/catch.hpp>
#include <zlib.h>

#include <cstdio>
#include <jpeglib.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if __has_include(<stb_image_write.h>)
#include <stb_image_write.h>
#else
#include <stb/stb_image_write.h>
#endif
#pragma GCC diagnostic pop

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "simmim/data/image_decode.hpp"
#include "simmim/data/image_folder.hpp"
#include "run_program.hpp"
#include "skip.hpp"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using simmim::data::DataError;
using simmim::data::RawImage;
using Catch::Matchers::Contains;

struct TempDir {
    fs::path path;
    TempDir() {
        std::random_device device;
        path = fs::temp_directory_path() / ("simmim-test-decode-" + std::to_string(device()) + "-" + std::to_string(device()));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

void write_file(const fs::path& path, const Bytes& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
}

template <class F>
std::string data_error_of(F&& f) {
    try {
        f();
    } catch (const DataError& e) {
        return e.what();
    }
    FAIL("expected a DataError");
    return {};
}

// ---- a PNG writer written from the specification ----------------------------------------------

void put_be32(Bytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

void put_chunk(Bytes& out, const char* type, const Bytes& data) {
    put_be32(out, static_cast<std::uint32_t>(data.size()));
    Bytes typed(type, type + 4);
    typed.insert(typed.end(), data.begin(), data.end());
    out.insert(out.end(), typed.begin(), typed.end());
    put_be32(out, static_cast<std::uint32_t>(crc32(0, typed.data(), static_cast<uInt>(typed.size()))));
}

struct PngSpec {
    std::uint32_t width = 0, height = 0;
    int bit_depth = 8, color_type = 0;  // 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA
    bool interlaced = false;
    Bytes palette;                      // PLTE: RGB triples
    Bytes trns;                         // tRNS chunk data as stored
    std::function<unsigned(std::uint32_t x, std::uint32_t y, int sample)> sample;  // value < 2^bit_depth
    std::size_t text_bytes = 0;         // a tEXt chunk of this many bytes before IDAT
};

int samples_per_pixel(int color_type) {
    switch (color_type) {
        case 0: case 3: return 1;
        case 2: return 3;
        case 4: return 2;
        default: return 4;
    }
}

/// Filter-0 scanlines of the sub-image of pixels (x0 + i*dx, y0 + j*dy).
void append_scanlines(Bytes& raw, const PngSpec& s, std::uint32_t x0, std::uint32_t y0, std::uint32_t dx, std::uint32_t dy) {
    const int n = samples_per_pixel(s.color_type);
    for (std::uint32_t y = y0; y < s.height; y += dy) {
        if (x0 >= s.width) return;  // an empty pass has no scanlines at all
        raw.push_back(0);           // filter type None
        unsigned acc = 0;
        int bits = 0;
        for (std::uint32_t x = x0; x < s.width; x += dx)
            for (int c = 0; c < n; ++c) {
                const unsigned v = s.sample(x, y, c);
                if (s.bit_depth == 16) {
                    raw.push_back(static_cast<std::uint8_t>(v >> 8));
                    raw.push_back(static_cast<std::uint8_t>(v));
                } else if (s.bit_depth == 8) {
                    raw.push_back(static_cast<std::uint8_t>(v));
                } else {
                    acc = (acc << s.bit_depth) | v;
                    bits += s.bit_depth;
                    if (bits == 8) raw.push_back(static_cast<std::uint8_t>(acc)), acc = 0, bits = 0;
                }
            }
        if (bits > 0) raw.push_back(static_cast<std::uint8_t>(acc << (8 - bits)));
    }
}

/// The PNG file of `s`; without `with_idat` its IDAT chunk holds two junk bytes instead of the
/// pixels (a header that claims any size at the cost of a few bytes).
Bytes make_png(const PngSpec& s, bool with_idat = true) {
    Bytes out{0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    Bytes ihdr;
    put_be32(ihdr, s.width);
    put_be32(ihdr, s.height);
    ihdr.insert(ihdr.end(), {static_cast<std::uint8_t>(s.bit_depth), static_cast<std::uint8_t>(s.color_type), 0, 0,
                             static_cast<std::uint8_t>(s.interlaced ? 1 : 0)});
    put_chunk(out, "IHDR", ihdr);
    if (!s.palette.empty()) put_chunk(out, "PLTE", s.palette);
    if (!s.trns.empty()) put_chunk(out, "tRNS", s.trns);
    if (s.text_bytes > 0) {
        Bytes text{'C', 'o', 'm', 'm', 'e', 'n', 't', 0};
        text.resize(s.text_bytes, 'x');
        put_chunk(out, "tEXt", text);
    }
    if (with_idat) {
        Bytes raw;
        if (!s.interlaced) {
            append_scanlines(raw, s, 0, 0, 1, 1);
        } else {  // Adam7: (x0, y0, dx, dy) of the seven passes
            const std::uint32_t passes[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                                {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
            for (const auto& p : passes) append_scanlines(raw, s, p[0], p[1], p[2], p[3]);
        }
        uLongf size = compressBound(static_cast<uLong>(raw.size()));
        Bytes z(size);
        REQUIRE(compress(z.data(), &size, raw.data(), static_cast<uLong>(raw.size())) == Z_OK);
        z.resize(size);
        put_chunk(out, "IDAT", z);
    } else {
        put_chunk(out, "IDAT", {0x78, 0x9C});
    }
    put_chunk(out, "IEND", {});
    return out;
}

// ---- a JPEG writer (libjpeg) ------------------------------------------------------------------

Bytes make_jpeg(int width, int height, int components, J_COLOR_SPACE space, const std::vector<std::uint8_t>& pixel, bool progressive,
                int quality = 95) {
    jpeg_compress_struct cinfo{};
    jpeg_error_mgr err{};
    cinfo.err = jpeg_std_error(&err);
    jpeg_create_compress(&cinfo);
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&cinfo, &buffer, &size);
    cinfo.image_width = static_cast<JDIMENSION>(width);
    cinfo.image_height = static_cast<JDIMENSION>(height);
    cinfo.input_components = components;
    cinfo.in_color_space = space;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    std::vector<std::uint8_t> row;
    for (int x = 0; x < width; ++x) row.insert(row.end(), pixel.begin(), pixel.end());
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW r = row.data();
        jpeg_write_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    Bytes out(buffer, buffer + size);
    std::free(buffer);
    return out;
}

/// A JPEG of a textured RGB image (a deterministic pattern with plenty of detail, so the entropy-coded
/// data is long and every bit of it matters), baseline or progressive.
Bytes make_textured_jpeg(int width, int height, bool progressive) {
    jpeg_compress_struct cinfo{};
    jpeg_error_mgr err{};
    cinfo.err = jpeg_std_error(&err);
    jpeg_create_compress(&cinfo);
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&cinfo, &buffer, &size);
    cinfo.image_width = static_cast<JDIMENSION>(width);
    cinfo.image_height = static_cast<JDIMENSION>(height);
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, 90, TRUE);
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    std::vector<std::uint8_t> row(static_cast<std::size_t>(width) * 3);
    while (cinfo.next_scanline < cinfo.image_height) {
        const unsigned y = cinfo.next_scanline;
        for (unsigned x = 0; x < static_cast<unsigned>(width); ++x)
            for (unsigned c = 0; c < 3; ++c) row[3 * x + c] = static_cast<std::uint8_t>(x * 4 + y * 3 + c * 50 + ((x * 7919u + y * 104729u + c * 31u) * 2654435761u >> 27));
        JSAMPROW r = row.data();
        jpeg_write_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    Bytes out(buffer, buffer + size);
    std::free(buffer);
    return out;
}

/// Offset of the first byte of entropy-coded data in a JPEG: after the first SOS segment.
std::size_t scan_data_offset(const Bytes& jpeg) {
    for (std::size_t i = 2; i + 3 < jpeg.size(); ++i)
        if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xDA) return i + 2 + (std::size_t(jpeg[i + 2]) << 8 | jpeg[i + 3]);
    FAIL("no SOS marker");
    return 0;
}

/// Offset of the SOF0/SOF2 segment's height field in a JPEG written by make_jpeg.
std::size_t sof_height_offset(const Bytes& jpeg) {
    for (std::size_t i = 2; i + 8 < jpeg.size(); ++i)
        if (jpeg[i] == 0xFF && (jpeg[i + 1] == 0xC0 || jpeg[i + 1] == 0xC2)) return i + 5;
    FAIL("no SOF marker");
    return 0;
}

RawImage decode(const Bytes& bytes, const simmim::data::ImageDecodeLimits& limits = {}) {
    return simmim::data::decode_image(bytes, "test-image", limits);
}

}  // namespace

TEST_CASE("decode_image: every PNG colour type and bit depth, palettes, tRNS, Adam7, against hand-built files", "[data][decode]") {
    struct Case {
        int color_type, bit_depth;
        bool trns, interlaced;
        std::uint32_t width, height;
    };
    const std::vector<Case> cases{
        {0, 1, false, false, 13, 3}, {0, 2, false, false, 7, 2}, {0, 4, false, true, 9, 9},  {0, 8, false, false, 5, 4},
        {0, 16, false, false, 3, 3}, {0, 8, true, false, 6, 2},  {0, 16, true, true, 10, 9}, {2, 8, false, true, 17, 11},
        {2, 16, false, false, 4, 2}, {2, 8, true, false, 5, 3},  {3, 1, false, false, 11, 2}, {3, 2, true, false, 6, 3},
        {3, 4, false, true, 8, 8},   {3, 8, true, false, 7, 5},  {4, 8, false, false, 3, 4}, {4, 16, false, true, 5, 5},
        {6, 8, false, false, 4, 3},  {6, 16, false, false, 2, 2}, {6, 8, false, true, 1, 1}, {0, 8, false, true, 2, 1},
    };
    for (const Case& c : cases) {
        INFO("colour type " << c.color_type << ", " << c.bit_depth << "-bit, tRNS " << c.trns << ", interlaced " << c.interlaced << ", "
                            << c.width << "x" << c.height);
        const unsigned max = (1u << c.bit_depth) - 1;
        PngSpec s;
        s.width = c.width;
        s.height = c.height;
        s.bit_depth = c.bit_depth;
        s.color_type = c.color_type;
        s.interlaced = c.interlaced;
        const unsigned entries = c.color_type == 3 ? std::min(max + 1, 5u) : 0;  // palette indices 0..entries-1
        s.sample = [&](std::uint32_t x, std::uint32_t y, int ch) {
            if (c.color_type == 3) return (x * 3 + y) % entries;
            return (x * 2654435761u ^ (y + 1) * 40503u ^ static_cast<unsigned>(ch + 1) * 977u) % (max + 1);
        };
        for (unsigned i = 0; i < entries; ++i) s.palette.insert(s.palette.end(), {std::uint8_t(10 + i * 40), std::uint8_t(200 - i * 30), std::uint8_t(i * 61)});
        // tRNS: a transparent grey level / colour equal to the sample of pixel (1, 0); alphas of the first 3 palette entries
        const unsigned key[3] = {s.sample(1, 0, 0), s.sample(1, 0, 1), s.sample(1, 0, 2)};
        if (c.trns && c.color_type == 0) s.trns = {std::uint8_t(key[0] >> 8), std::uint8_t(key[0])};
        if (c.trns && c.color_type == 2)
            for (const unsigned k : key) s.trns.insert(s.trns.end(), {std::uint8_t(k >> 8), std::uint8_t(k)});
        if (c.trns && c.color_type == 3) s.trns = {0, 128, 255};
        const Bytes file = make_png(s);

        const int expected_channels = samples_per_pixel(c.color_type == 3 ? 2 : c.color_type) + (c.trns ? 1 : 0);
        const simmim::data::ImageInfo info = simmim::data::read_image_info(file, "test-image");
        CHECK(info.format == simmim::data::ImageFormat::Png);
        CHECK(info.width == int(c.width));
        CHECK(info.height == int(c.height));
        CHECK(info.channels == expected_channels);
        const RawImage image = decode(file);
        REQUIRE(image.width == int(c.width));
        REQUIRE(image.height == int(c.height));
        REQUIRE(image.channels == expected_channels);
        REQUIRE(image.pixels.size() == std::size_t(c.width) * c.height * std::size_t(expected_channels));
        const auto to8 = [&](unsigned v) -> unsigned { return c.bit_depth == 16 ? v >> 8 : c.bit_depth == 8 ? v : v * 255 / max; };
        std::size_t mismatches = 0;
        for (std::uint32_t y = 0; y < c.height; ++y)
            for (std::uint32_t x = 0; x < c.width; ++x) {
                std::vector<unsigned> want;
                if (c.color_type == 3) {
                    const unsigned index = s.sample(x, y, 0);
                    for (int k = 0; k < 3; ++k) want.push_back(s.palette[3 * index + std::size_t(k)]);
                    if (c.trns) want.push_back(index < s.trns.size() ? s.trns[index] : 255);
                } else {
                    const int n = samples_per_pixel(c.color_type);
                    bool transparent = c.trns;
                    for (int ch = 0; ch < n; ++ch) {
                        want.push_back(to8(s.sample(x, y, ch)));
                        transparent = transparent && s.sample(x, y, ch) == key[ch];
                    }
                    if (c.trns) want.push_back(transparent ? 0 : 255);
                }
                for (std::size_t ch = 0; ch < want.size(); ++ch)
                    mismatches += image.pixels[(std::size_t(y) * c.width + x) * want.size() + ch] != want[ch];
            }
        CHECK(mismatches == 0);
    }
}

TEST_CASE("decode_image: JPEG greyscale, RGB, CMYK and progressive", "[data][decode]") {
    const auto near = [](const RawImage& image, const std::vector<int>& colour, int tolerance) {
        for (std::size_t i = 0; i < image.pixels.size(); ++i)
            if (std::abs(int(image.pixels[i]) - colour[i % colour.size()]) > tolerance) return false;
        return true;
    };
    SECTION("greyscale: one channel") {
        const RawImage image = decode(make_jpeg(9, 7, 1, JCS_GRAYSCALE, {77}, false));
        CHECK(image.width == 9);
        CHECK(image.height == 7);
        REQUIRE(image.channels == 1);
        CHECK(near(image, {77}, 2));
    }
    SECTION("RGB: three channels") {
        const RawImage image = decode(make_jpeg(16, 8, 3, JCS_RGB, {200, 100, 50}, false));
        REQUIRE(image.channels == 3);
        CHECK(near(image, {200, 100, 50}, 3));
    }
    SECTION("CMYK (Adobe): three channels, R = C * K / 255") {
        const Bytes file = make_jpeg(8, 8, 4, JCS_CMYK, {240, 128, 20, 200}, false);
        CHECK(simmim::data::read_image_info(file, "cmyk").channels == 3);
        const RawImage image = decode(file);
        REQUIRE(image.channels == 3);
        CHECK(near(image, {240 * 200 / 255, 128 * 200 / 255, 20 * 200 / 255}, 4));
    }
    SECTION("progressive: the same pixels as the baseline file") {
        std::vector<std::uint8_t> colour{30, 60, 90};
        const RawImage baseline = decode(make_jpeg(24, 17, 3, JCS_RGB, colour, false));
        const RawImage progressive = decode(make_jpeg(24, 17, 3, JCS_RGB, colour, true));
        CHECK(progressive.width == 24);
        CHECK(progressive.height == 17);
        CHECK(progressive.pixels == baseline.pixels);
    }
}

TEST_CASE("decode_image: the decoder is chosen by content; other formats and broken files are DataErrors naming the file", "[data][decode]") {
    TempDir dir;
    const Bytes jpeg = make_jpeg(8, 8, 3, JCS_RGB, {10, 20, 30}, false);
    write_file(dir.path / "a" / "jpeg_named.png", jpeg);
    simmim::data::ImageFolderDataset renamed(dir.path / "a");
    CHECK(renamed.validate().kept == 1);
    CHECK(renamed.get(0).channels == 3);

    // a BMP named .jpg: not decoded at all
    Bytes bmp;
    const std::uint8_t px[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    stbi_write_bmp_to_func([](void* c, void* d, int n) { auto* o = static_cast<Bytes*>(c); o->insert(o->end(), (std::uint8_t*)d, (std::uint8_t*)d + n); },
                           &bmp, 2, 2, 3, px);
    const fs::path bmp_path = dir.path / "b" / "bitmap.jpg";
    write_file(bmp_path, bmp);
    simmim::data::ImageFolderDataset other(dir.path / "b");
    const std::string message = data_error_of([&] { (void)other.get(0); });
    CHECK_THAT(message, Contains(bmp_path.string()) && Contains("not a JPEG or PNG") && Contains("42 4D"));
    CHECK_THROWS_AS(other.validate(), DataError);

    PngSpec s;
    s.width = 6;
    s.height = 5;
    s.sample = [](std::uint32_t x, std::uint32_t y, int) { return x * 40 + y; };
    const Bytes png = make_png(s);
    SECTION("truncated PNG") {
        const Bytes cut(png.begin(), png.end() - 20);  // inside the IDAT chunk
        const fs::path path = dir.path / "c" / "cut.png";
        write_file(path, cut);
        const std::string m = data_error_of([&] { (void)simmim::data::ImageFolderDataset(dir.path / "c").get(0); });
        CHECK_THAT(m, Contains(path.string()) && Contains("damaged PNG") && Contains("chunk IDAT"));  // found before libpng runs
    }
    SECTION("PNG with a corrupted IHDR CRC") {
        Bytes bad = png;
        bad[29] ^= 0x55;  // last CRC byte of IHDR (8 signature + 4 length + 4 type + 13 data)
        const std::string m = data_error_of([&] { (void)decode(bad); });
        CHECK_THAT(m, Contains("test-image") && Contains("CRC"));
    }
    SECTION("JPEG cut inside its header") {
        const Bytes cut(jpeg.begin(), jpeg.begin() + 40);
        CHECK_THAT(data_error_of([&] { (void)decode(cut); }), Contains("test-image") && Contains("libjpeg-turbo"));
    }
    SECTION("empty and tiny files") {
        CHECK_THAT(data_error_of([&] { (void)decode({}); }), Contains("empty file"));
        CHECK_THAT(data_error_of([&] { (void)decode({0xFF, 0xD8}); }), Contains("not a JPEG or PNG"));
    }
}

TEST_CASE("decode_image: zero-sized images and images above the pixel limit are refused from their header", "[data][decode]") {
    PngSpec s;
    s.sample = [](std::uint32_t, std::uint32_t, int) { return 7u; };
    SECTION("PNG of width 0") {
        s.width = 0;
        s.height = 4;
        CHECK_THAT(data_error_of([&] { (void)decode(make_png(s, false)); }), Contains("test-image") && Contains("libpng"));
    }
    SECTION("JPEG of height 0") {
        Bytes jpeg = make_jpeg(8, 8, 1, JCS_GRAYSCALE, {5}, false);
        const std::size_t at = sof_height_offset(jpeg);
        jpeg[at] = jpeg[at + 1] = 0;
        CHECK_THAT(data_error_of([&] { (void)decode(jpeg); }), Contains("test-image"));
    }
    SECTION("a PNG header declaring 10000 x 10000 (no pixel data): refused by the default 64 Mi limit before decoding") {
        s.width = s.height = 10000;
        const Bytes header_only = make_png(s, false);
        CHECK(simmim::data::kDefaultMaxImagePixels == 67108864u);
        const std::string m = data_error_of([&] { (void)simmim::data::read_image_info(header_only, "huge.png"); });
        CHECK_THAT(m, Contains("huge.png") && Contains("10000 x 10000") && Contains("67108864"));
        CHECK_THAT(data_error_of([&] { (void)decode(header_only); }), Contains("exceeds the limit"));
    }
    SECTION("a JPEG header declaring 65000 x 65000") {
        Bytes jpeg = make_jpeg(8, 8, 1, JCS_GRAYSCALE, {5}, false);
        const std::size_t at = sof_height_offset(jpeg);
        for (std::size_t k : {at, at + 2}) jpeg[k] = 0xFD, jpeg[k + 1] = 0xE8;  // 65000
        CHECK_THAT(data_error_of([&] { (void)decode(jpeg); }), Contains("65000 x 65000") && Contains("exceeds the limit"));
    }
    SECTION("a configured limit applies exactly, in ImageFolderDataset too") {
        TempDir dir;
        s.width = 5;
        s.height = 4;
        write_file(dir.path / "c" / "a_20px.png", make_png(s));
        s.height = 5;
        write_file(dir.path / "c" / "b_25px.png", make_png(s));
        simmim::data::ImageDecodeLimits limits;
        limits.max_pixels = 20;
        simmim::data::ImageFolderDataset ds(dir.path, limits);
        CHECK(ds.get(0).pixels.size() == 20);
        CHECK_THAT(data_error_of([&] { (void)ds.get(1); }), Contains("b_25px.png") && Contains("limit of 20 pixels"));
        const auto report = ds.validate();
        CHECK(report.kept == 1);
        CHECK(report.skipped == 1);
        simmim::data::ImageFolderDataset defaults(dir.path);
        CHECK(defaults.validate().kept == 2);
    }
}

TEST_CASE("ImageFolderDataset::validate reads headers that lie beyond the first 64 KiB", "[data][decode]") {
    TempDir dir;
    PngSpec s;
    s.width = 3;
    s.height = 2;
    s.sample = [](std::uint32_t x, std::uint32_t y, int) { return x + 10 * y; };
    s.text_bytes = 100000;  // a tEXt chunk before IDAT: the header (up to IDAT) ends past 64 KiB
    write_file(dir.path / "long_header.png", make_png(s));
    simmim::data::ImageFolderDataset ds(dir.path);
    CHECK(ds.validate().kept == 1);
    CHECK(ds.get(0).pixels == Bytes{0, 1, 2, 10, 11, 12});
}

// ---- damaged files: cut short, bit flips ---------------------------------------------------------

TEST_CASE("decode_image: a JPEG cut short anywhere is a DataError saying damaged, never an image with a grey rest", "[data][decode][damaged]") {
    for (const bool progressive : {false, true}) {
        INFO((progressive ? "progressive" : "baseline"));
        const Bytes jpeg = make_textured_jpeg(48, 40, progressive);
        REQUIRE(decode(jpeg).width == 48);
        std::size_t decoded = 0;
        for (std::size_t n = 0; n < jpeg.size(); ++n)  // every proper prefix, the one without EOI's last byte included
            try {
                (void)decode(Bytes(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(n)));
                ++decoded;
                UNSCOPED_INFO("a prefix of " << n << " of " << jpeg.size() << " bytes decoded");
            } catch (const DataError&) {
            }
        CHECK(decoded == 0);
        const Bytes half(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(jpeg.size() / 2));
        CHECK_THAT(data_error_of([&] { (void)decode(half); }), Contains("test-image") && Contains("damaged JPEG") && Contains("Premature end"));
    }
}

TEST_CASE("decode_image: bit flips in a JPEG's entropy-coded data that desynchronise the decoder are DataErrors", "[data][decode][damaged]") {
    // JPEG has no checksum: a flip in a coefficient's magnitude bits changes a value and nothing else, so
    // only the flips that desynchronise the Huffman decoding (a code changed into another of another
    // length, a marker made or broken) can be found. On this file 34% of the single-bit flips of the
    // scan data are (none were before libjpeg's "Corrupt JPEG data" warnings became errors).
    const Bytes jpeg = make_textured_jpeg(48, 40, false);
    const std::size_t begin = scan_data_offset(jpeg), end = jpeg.size() - 2;  // up to the EOI marker
    REQUIRE(end > begin + 500);
    std::size_t flips = 0, detected = 0;
    for (std::size_t at = begin; at < end; ++at)
        for (int bit = 0; bit < 8; ++bit) {
            Bytes bad = jpeg;
            bad[at] ^= static_cast<std::uint8_t>(1u << bit);
            ++flips;
            try {
                const RawImage image = decode(bad);
                if (image.width != 48 || image.height != 40 || image.channels != 3) FAIL_CHECK("flip at " << at << " changed the geometry");
            } catch (const DataError& e) {
                ++detected;
                if (std::string(e.what()).find("test-image") == std::string::npos) FAIL_CHECK("message does not name the file: " << e.what());
            }
        }
    INFO(detected << " of " << flips << " single-bit flips in the scan data detected");
    CHECK(detected * 4 >= flips);  // measured 34% (3324 of 9688) with libjpeg-turbo 2.1.5; 0% when damage warnings were dropped
    SECTION("a flip in the EOI marker: the file ends without one") {
        Bytes bad = jpeg;
        bad[jpeg.size() - 2] ^= 0x01;  // FF D9 -> FE D9
        CHECK_THAT(data_error_of([&] { (void)decode(bad); }), Contains("damaged JPEG"));
    }
    SECTION("extraneous bytes before the EOI marker") {
        Bytes bad = jpeg;
        bad.insert(bad.end() - 2, 32, 0x12);  // more than the decoder's bit buffer prefetches
        CHECK_THAT(data_error_of([&] { (void)decode(bad); }), Contains("damaged JPEG") && Contains("Corrupt JPEG data"));
    }
    SECTION("bytes after the EOI marker are not damage") {
        Bytes padded = jpeg;
        padded.insert(padded.end(), {0, 0, 0, 0});
        CHECK(decode(padded).pixels == decode(jpeg).pixels);
    }
}

TEST_CASE("decode_image: a PNG cut short anywhere or with any bit flipped is a DataError", "[data][decode][damaged]") {
    for (const bool interlaced : {false, true}) {
        INFO((interlaced ? "interlaced" : "not interlaced"));
        PngSpec s;
        s.width = 13;
        s.height = 11;
        s.color_type = 2;
        s.interlaced = interlaced;
        s.text_bytes = 20;  // an ancillary chunk (tEXt) before IDAT: its CRC counts too
        s.sample = [](std::uint32_t x, std::uint32_t y, int c) { return (x * 7 + y * 13 + unsigned(c) * 71) & 255u; };
        const Bytes png = make_png(s);
        REQUIRE(decode(png).width == 13);
        std::size_t decoded = 0;
        for (std::size_t n = 0; n < png.size(); ++n)
            try {
                (void)decode(Bytes(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(n)));
                ++decoded;
                UNSCOPED_INFO("a prefix of " << n << " of " << png.size() << " bytes decoded");
            } catch (const DataError&) {
            }
        CHECK(decoded == 0);
        std::size_t undetected = 0;
        for (std::size_t at = 0; at < png.size(); ++at)  // the signature, every chunk's length, type, data and CRC
            for (int bit = 0; bit < 8; ++bit) {
                Bytes bad = png;
                bad[at] ^= static_cast<std::uint8_t>(1u << bit);
                try {
                    (void)decode(bad);
                    ++undetected;
                    UNSCOPED_INFO("flip of bit " << bit << " of byte " << at << " decoded");
                } catch (const DataError&) {
                }
            }
        CHECK(undetected == 0);
    }
    SECTION("messages: cut in IDAT, no IEND, a CRC mismatch in an ancillary chunk") {
        PngSpec s;
        s.width = 6;
        s.height = 5;
        s.text_bytes = 12;
        s.sample = [](std::uint32_t x, std::uint32_t y, int) { return x * 40 + y; };
        const Bytes png = make_png(s);
        CHECK_THAT(data_error_of([&] { (void)decode(Bytes(png.begin(), png.end() - 20)); }), Contains("test-image") && Contains("damaged PNG"));
        CHECK_THAT(data_error_of([&] { (void)decode(Bytes(png.begin(), png.end() - 12)); }), Contains("damaged PNG"));  // IEND missing
        Bytes bad = png;
        bad[33 + 8 + 3] ^= 0x04;  // a byte of the tEXt keyword (IHDR chunk ends at 33; 4 length + 4 type)
        CHECK_THAT(data_error_of([&] { (void)decode(bad); }), Contains("damaged PNG") && Contains("CRC"));
    }
}

namespace {

/// A folder with 10 good images (JPEG and PNG, 24 x 24 RGB) and 6 bad ones: a JPEG cut in half, a JPEG
/// whose EOI is gone, a PNG cut in half, a PNG with one bit flipped in its IDAT data, an empty file and a
/// text file named .png. Returns the paths of the damaged four.
std::vector<fs::path> write_folder_with_damaged_images(const fs::path& root) {
    PngSpec s;
    s.width = s.height = 24;
    s.color_type = 2;
    s.sample = [](std::uint32_t x, std::uint32_t y, int c) { return (x * 9 + y * 5 + unsigned(c) * 80) & 255u; };
    const Bytes png = make_png(s);
    const Bytes jpeg = make_textured_jpeg(24, 24, false);
    for (int i = 0; i < 5; ++i) {
        write_file(root / ("good_" + std::to_string(i) + ".jpg"), jpeg);
        write_file(root / ("good_" + std::to_string(i) + ".png"), png);
    }
    std::vector<fs::path> damaged{root / "cut.jpg", root / "no_eoi.jpg", root / "cut.png", root / "flipped.png"};
    write_file(damaged[0], Bytes(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(jpeg.size() / 2)));
    write_file(damaged[1], Bytes(jpeg.begin(), jpeg.end() - 2));
    write_file(damaged[2], Bytes(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(png.size() / 2)));
    Bytes flipped = png;
    flipped[33 + 8 + 10] ^= 0x10;  // inside the IDAT data (IHDR ends at 33)
    write_file(damaged[3], flipped);
    write_file(root / "empty.png", {});
    write_file(root / "text.png", {'h', 'e', 'l', 'l', 'o'});
    return damaged;
}

}  // namespace

TEST_CASE("ImageFolderDataset::validate skips damaged files, counts them and names each with its reason", "[data][decode][damaged]") {
    TempDir dir;
    const auto damaged = write_folder_with_damaged_images(dir.path);
    simmim::data::ImageFolderDataset ds(dir.path);
    REQUIRE(ds.size() == 16);
    const auto report = ds.validate();
    CHECK(report.kept == 10);
    CHECK(report.skipped == 6);
    CHECK(report.damaged == 4);
    REQUIRE(report.first_skipped_names.size() == 5);  // the first five in path order
    REQUIRE(report.first_skipped_reasons.size() == 5);
    const std::vector<std::string> first{"cut.jpg", "cut.png", "empty.png", "flipped.png", "no_eoi.jpg"};
    for (std::size_t i = 0; i < 5; ++i) {
        INFO(report.first_skipped_reasons[i]);
        CHECK(fs::path(report.first_skipped_names[i]).filename() == first[i]);
        CHECK_THAT(report.first_skipped_reasons[i], Contains(report.first_skipped_names[i]));
        if (first[i] != "empty.png") CHECK_THAT(report.first_skipped_reasons[i], Contains("damaged"));
    }
    for (std::size_t i = 0; i < ds.size(); ++i) CHECK(ds.get(i).width == 24);
    // and get() refuses a file damaged after the scan
    Bytes cut;
    {
        std::ifstream in(dir.path / "cut.jpg", std::ios::binary);
        cut.assign(std::istreambuf_iterator<char>(in), {});
    }
    write_file(dir.path / "good_0.jpg", cut);
    CHECK_THAT(data_error_of([&] { (void)ds.get(0); }), Contains("good_0.jpg") && Contains("damaged JPEG"));
}

TEST_CASE("simmim_pretrain names the damaged images it skips; --strict-images makes them an error", "[data][decode][damaged][cli]") {
    if (!simmim::test::examples_built()) SIMMIM_SKIP("the example programs are not built (SIMMIM_BUILD_EXAMPLES=OFF)");
    TempDir dir;
    const auto damaged = write_folder_with_damaged_images(dir.path / "images");
    const std::vector<std::string> common{"--model", "vit-tiny-test", "--batch", "4", "--steps", "2", "--threads", "1",
                                          "--data", (dir.path / "images").string()};
    auto args = common;
    args.insert(args.end(), {"--out", (dir.path / "run").string()});
    const auto run = simmim::test::run_program("simmim_pretrain", args);
    INFO(run.output);
    CHECK(run.exit_code == 0);
    CHECK_THAT(run.output, Contains("6 of 16 image files skipped (4 damaged, 2 unreadable)"));
    for (const auto& path : damaged) CHECK_THAT(run.output, Contains("skipped " + path.string() + ": damaged"));  // among the first five listed
    CHECK_THAT(run.output, Contains("and 1 more"));  // text.png, the sixth in path order
    CHECK(fs::exists(dir.path / "run" / "checkpoint.safetensors"));

    args = common;
    args.insert(args.end(), {"--out", (dir.path / "strict").string(), "--strict-images"});
    const auto strict = simmim::test::run_program("simmim_pretrain", args);
    INFO(strict.output);
    CHECK(strict.exit_code == 1);
    CHECK_THAT(strict.output, Contains("simmim_pretrain: error: --strict-images: 6 of 16 image files in " + (dir.path / "images").string() +
                                       " are damaged or unreadable, e.g. " + damaged[0].string() + ": damaged JPEG"));
    CHECK_FALSE(fs::exists(dir.path / "strict" / "checkpoint.safetensors"));
}
