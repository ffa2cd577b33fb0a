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
        CHECK_THAT(m, Contains(path.string()) && Contains("libpng"));
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
