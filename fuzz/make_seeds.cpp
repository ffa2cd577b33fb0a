// fuzz/make_seeds.cpp: writes the seed corpora under fuzz/corpus/<target>/ (committed; re-run
// after a format change). Valid and near-valid inputs made with the project's own writers,
// zlib, stb_image_write, libjpeg and libpng, so the fuzzer starts past the magic numbers and headers.
//   g++ -std=c++20 -O1 -Iinclude -I/usr/include/eigen3 -I/usr/include/stb -fopenmp fuzz/make_seeds.cpp -lz -ljpeg -lpng -o /tmp/make_seeds
//   /tmp/make_seeds fuzz/corpus
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>
#include <zlib.h>

#include <csetjmp>
#include <cstdio>
#include <jpeglib.h>
#include <png.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/io/checkpoint.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/simmim.hpp"

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

fs::path g_root;

void write(const std::string& target, const std::string& name, const Bytes& bytes) {
    const fs::path dir = g_root / target;
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + (dir / name).string());
}

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes gzip(const Bytes& in) {
    z_stream zs{};
    if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
    Bytes out(deflateBound(&zs, static_cast<uLong>(in.size())) + 32);
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
    out.resize(zs.total_out);
    deflateEnd(&zs);
    return out;
}

Bytes from_bytes(const std::vector<std::byte>& b) {
    Bytes out(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) out[i] = std::to_integer<std::uint8_t>(b[i]);
    return out;
}

Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

Bytes be32(std::uint32_t v) { return {std::uint8_t(v >> 24), std::uint8_t(v >> 16), std::uint8_t(v >> 8), std::uint8_t(v)}; }

void safetensors_seeds() {
    namespace io = simmim::io;
    io::TensorFile a;
    const std::vector<float> f{1.5f, -2.f, 0.f, 3.25f, 1e-3f, 7.f};
    a.set<float>("weight", std::span<const float>(f), {2, 3});
    a.set<float>("bias", std::span<const float>(f.data(), 2), {2});
    a.metadata = {{"format", "pt"}, {"note", "seed"}};
    write("safetensors", "two_f32", from_bytes(io::serialize_safetensors(a)));

    io::TensorFile b;  // one tensor of each dtype, a scalar and an empty tensor
    const std::vector<double> d{1.0, -0.5};
    const std::vector<std::int64_t> i64{-3, 1ll << 40};
    const std::vector<std::int32_t> i32{7};
    const std::vector<std::int16_t> i16{-2, 2};
    const std::vector<std::int8_t> i8{-1};
    const std::vector<std::uint8_t> u8{0, 255, 3};
    const bool bools[2] = {true, false};
    b.set<double>("f64", std::span<const double>(d), {2});
    b.set<std::int64_t>("i64", std::span<const std::int64_t>(i64), {2, 1});
    b.set<std::int32_t>("i32_scalar", std::span<const std::int32_t>(i32), {});
    b.set<std::int16_t>("i16", std::span<const std::int16_t>(i16), {1, 2});
    b.set<std::int8_t>("i8", std::span<const std::int8_t>(i8), {1});
    b.set<std::uint8_t>("u8", std::span<const std::uint8_t>(u8), {3});
    b.set<bool>("bool", std::span<const bool>(bools, 2), {2});
    b.set<float>("empty", std::span<const float>(), {0, 4});
    b.set("f16", io::TensorData{io::DType::F16, {2}, {std::byte{0x00}, std::byte{0x3c}, std::byte{0x00}, std::byte{0x7c}}});
    b.set("bf16", io::TensorData{io::DType::BF16, {1}, {std::byte{0x80}, std::byte{0x3f}}});
    write("safetensors", "all_dtypes", from_bytes(io::serialize_safetensors(b)));

    // A header written by hand in the Python library's style (unpadded, metadata last).
    const std::string header = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"k":"v"}})";
    Bytes h(8);
    for (int k = 0; k < 8; ++k) h[k] = std::uint8_t(header.size() >> (8 * k));
    write("safetensors", "hand_written", cat({h, text(header), {0, 0, 128, 63}}));
}

void checkpoint_seeds() {
    // The model of fuzz_checkpoint.cpp, saved as simmim_pretrain saves it.
    constexpr simmim::ViTConfig config{8, 1, 4, 8, 1, 2, 4};
    constexpr simmim::MaskSpec configMask{4, 0.5};
    simmim::ViTSimMIM<float, config> model(simmim::random_mask_patch<config, configMask>(), 3);
    simmim::AdamW<float> opt(model.params());
    const fs::path tmp = fs::temp_directory_path() / "simmim-make-seeds.safetensors";
    simmim::io::save_checkpoint(tmp, model.params(), opt,
                                {{"step", "4"}, {"epoch", "0"}, {"model", "fuzz"}, {"config", R"({"batch":8,"seed":0})"}});
    std::ifstream in(tmp, std::ios::binary);
    write("checkpoint", "trainer_style", Bytes(std::istreambuf_iterator<char>(in), {}));
    fs::remove(tmp);
}

void idx_seeds() {
    // 3 images of 4 x 5 and their labels. Input layout of fuzz_idx.cpp: flags, [label length (2 bytes)], images, labels.
    Bytes images = cat({be32(0x803), be32(3), be32(4), be32(5)});
    for (int i = 0; i < 3 * 4 * 5; ++i) images.push_back(std::uint8_t(i * 4));
    const Bytes labels = cat({be32(0x801), be32(3), {2, 0, 9}});
    const auto with_labels = [](const Bytes& im, const Bytes& lb) {
        return cat({{1, std::uint8_t(lb.size() >> 8), std::uint8_t(lb.size())}, im, lb});
    };
    write("idx", "plain_labeled", with_labels(images, labels));
    write("idx", "plain_unlabeled", cat({{0}, images}));
    write("idx", "gzip_images", with_labels(gzip(images), labels));
    write("idx", "gzip_both", with_labels(gzip(images), gzip(labels)));
    write("idx", "gzip_two_members", cat({{0}, gzip(Bytes(images.begin(), images.begin() + 20)), gzip(Bytes(images.begin() + 20, images.end()))}));
}

void cifar_seeds() {
    Bytes ten{0}, hundred{1};  // fuzz_cifar.cpp's flag byte
    for (int r = 0; r < 2; ++r) {
        ten.push_back(std::uint8_t(r + 3));
        hundred.push_back(std::uint8_t(r));       // coarse label
        hundred.push_back(std::uint8_t(r + 50));  // fine label
        for (int p = 0; p < 3072; ++p) {
            ten.push_back(std::uint8_t(p * 7 + r));
            hundred.push_back(std::uint8_t(p * 5 + r));
        }
    }
    write("cifar", "cifar10_two_records", ten);
    write("cifar", "cifar100_two_records", hundred);
}

/// A JPEG of w x h written by libjpeg: `components` 1 (grey), 3 (RGB) or 4 (CMYK, Adobe marker).
Bytes libjpeg_file(int w, int h, int components, bool progressive) {
    jpeg_compress_struct cinfo{};
    jpeg_error_mgr err{};
    cinfo.err = jpeg_std_error(&err);
    jpeg_create_compress(&cinfo);
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&cinfo, &buffer, &size);
    cinfo.image_width = static_cast<JDIMENSION>(w);
    cinfo.image_height = static_cast<JDIMENSION>(h);
    cinfo.input_components = components;
    cinfo.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, 80, TRUE);
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    std::vector<std::uint8_t> row(static_cast<std::size_t>(w * components));
    while (cinfo.next_scanline < cinfo.image_height) {
        for (std::size_t i = 0; i < row.size(); ++i) row[i] = std::uint8_t(i * 29 + cinfo.next_scanline * 13);
        JSAMPROW r = row.data();
        jpeg_write_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    Bytes out(buffer, buffer + size);
    std::free(buffer);
    return out;
}

/// A PNG of w x h written by libpng with the given bit depth and colour type (a 4-entry palette for
/// type 3), optionally Adam7-interlaced and with a tRNS chunk.
Bytes libpng_file(int w, int h, int bit_depth, int color_type, bool interlaced, bool trns) {
    Bytes out;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) throw std::runtime_error("libpng write failed");
    png_set_write_fn(
        png, &out, [](png_structp p, png_bytep data, png_size_t n) { static_cast<Bytes*>(png_get_io_ptr(p))->insert(static_cast<Bytes*>(png_get_io_ptr(p))->end(), data, data + n); },
        nullptr);
    png_set_IHDR(png, info, png_uint_32(w), png_uint_32(h), bit_depth, color_type, interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_color palette[4] = {{0, 0, 0}, {255, 0, 0}, {0, 200, 0}, {30, 60, 250}};
        png_set_PLTE(png, info, palette, 4);
        if (trns) {
            png_byte alpha[2] = {0, 128};
            png_set_tRNS(png, info, alpha, 2, nullptr);
        }
    } else if (trns) {
        png_color_16 key{};
        key.gray = key.red = key.green = key.blue = 1;
        png_set_tRNS(png, info, nullptr, 0, &key);
    }
    png_write_info(png, info);
    const int channels = color_type == PNG_COLOR_TYPE_RGB ? 3 : color_type == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    const std::size_t row_bytes = (std::size_t(w) * std::size_t(channels) * std::size_t(bit_depth) + 7) / 8;
    std::vector<std::vector<png_byte>> rows(static_cast<std::size_t>(h), std::vector<png_byte>(row_bytes));
    std::vector<png_bytep> pointers;
    for (std::size_t y = 0; y < rows.size(); ++y) {
        for (std::size_t i = 0; i < row_bytes; ++i)
            rows[y][i] = png_byte(color_type == PNG_COLOR_TYPE_PALETTE && bit_depth == 8 ? (i + y) % 4 : i * 41 + y * 7);
        pointers.push_back(rows[y].data());
    }
    if (interlaced) png_set_interlace_handling(png);
    png_write_image(png, pointers.data());
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    return out;
}

void image_seeds() {
    // fuzz_image.cpp's first byte: bits 0-1 pick the extension, bit 2 the model's channels.
    const auto sink = [](void* context, void* data, int size) {
        auto* out = static_cast<Bytes*>(context);
        out->insert(out->end(), static_cast<std::uint8_t*>(data), static_cast<std::uint8_t*>(data) + size);
    };
    const int w = 5, h = 3;
    for (int c = 1; c <= 4; ++c) {
        std::vector<std::uint8_t> px(static_cast<std::size_t>(w * h * c));
        for (std::size_t i = 0; i < px.size(); ++i) px[i] = std::uint8_t(i * 37);
        Bytes png{std::uint8_t(c == 3 ? 4 : 0)};
        stbi_write_png_to_func(sink, &png, w, h, c, px.data(), w * c);
        write("image", "png_c" + std::to_string(c), png);
        if (c == 1 || c == 3) {
            Bytes jpg{std::uint8_t(1 | (c == 3 ? 4 : 0))};
            stbi_write_jpg_to_func(sink, &jpg, w, h, c, px.data(), 90);
            write("image", "jpg_c" + std::to_string(c), jpg);
        }
        Bytes bmp{6}, tga{0};
        stbi_write_bmp_to_func(sink, &bmp, w, h, c, px.data());
        stbi_write_tga_to_func(sink, &tga, w, h, c, px.data());
        write("image", "bmp_c" + std::to_string(c), bmp);
        write("image", "tga_c" + std::to_string(c), tga);
    }
    std::vector<float> hdr(static_cast<std::size_t>(w * h * 3), 0.5f);
    Bytes hdr_file{4};
    stbi_write_hdr_to_func(sink, &hdr_file, w, h, 3, hdr.data());
    write("image", "hdr", hdr_file);
    // The decoders' variants: libjpeg greyscale, progressive and CMYK JPEGs; libpng palette, tRNS,
    // low and high bit depths, interlaced PNGs.
    write("image", "jpg_grey_libjpeg", cat({{1}, libjpeg_file(9, 7, 1, false)}));
    write("image", "jpg_progressive", cat({{1 | 4}, libjpeg_file(17, 9, 3, true)}));
    write("image", "jpg_cmyk", cat({{2 | 4}, libjpeg_file(8, 8, 4, false)}));
    write("image", "png_palette_trns", cat({{4}, libpng_file(7, 5, 2, PNG_COLOR_TYPE_PALETTE, false, true)}));
    write("image", "png_palette8_interlaced", cat({{0}, libpng_file(9, 9, 8, PNG_COLOR_TYPE_PALETTE, true, false)}));
    write("image", "png_grey1", cat({{0}, libpng_file(11, 3, 1, PNG_COLOR_TYPE_GRAY, false, false)}));
    write("image", "png_grey16_trns_interlaced", cat({{0}, libpng_file(6, 6, 16, PNG_COLOR_TYPE_GRAY, true, true)}));
    write("image", "png_rgba16", cat({{4}, libpng_file(3, 2, 16, PNG_COLOR_TYPE_RGB_ALPHA, false, false)}));
    write("image", "png_jpeg_named_png", cat({{0 | 4}, libjpeg_file(5, 5, 3, false)}));  // content decides
    // Formats that are refused (only JPEG and PNG are decoded), kept so the fuzzer also starts from them.
    write("image", "pgm", cat({{2}, text("P5\n3 2\n255\n"), {0, 50, 100, 150, 200, 250}}));
    write("image", "ppm", cat({{4}, text("P6\n1 2\n255\n"), {255, 0, 0, 0, 255, 0}}));
    // The smallest GIF: 1x1, one colour.
    write("image", "gif", {0,    'G',  'I',  'F',  '8',  '9',  'a',  1,    0,    1,    0,    0x80, 0,    0,    0xff,
                           0xff, 0xff, 0,    0,    0,    0x21, 0xf9, 4,    1,    0,    0,    0,    0,    0x2c, 0,
                           0,    0,    0,    1,    0,    1,    0,    0,    2,    2,    0x44, 1,    0,    0x3b});
}

void cli_seeds() {
    const auto args = [](std::initializer_list<std::string> list) {
        std::string s;
        for (const auto& a : list) s += (s.empty() ? "" : "\n") + a;
        return text(s);
    };
    write("cli_pretrain", "tiny_steps", args({"--model", "vit-tiny-test", "--batch", "8", "--steps", "14", "--save-every", "4", "--seed", "11"}));
    write("cli_pretrain", "epochs_mask", args({"--epochs", "0.5", "--mask-ratio", "0.3", "--mask-patch", "8", "--threads", "1"}));
    write("cli_pretrain", "all_numbers", args({"--steps=3", "--base-lr", "1e-3", "--warmup-lr", "0", "--min-lr", "1e-6", "--warmup", "1",
                                               "--weight-decay", "0.05", "--clip-grad", "5", "--log-every", "1", "--vis-every", "0",
                                               "--vis-count", "4", "--stop-after", "2", "--skip-nonfinite"}));
    write("cli_pretrain", "data_resume", args({"--data", "/tmp", "--resume", "/etc/hostname", "--steps", "2", "--model", "vit-t4-32"}));
    write("cli_pretrain", "help", args({"--help"}));
    write("cli_reconstruct", "required", args({"--model", "vit-tiny-test", "--input", "in.safetensors", "--output", "out.safetensors"}));
    write("cli_reconstruct", "all", args({"--model", "vit-t4-32", "--input", "a", "--output", "b", "--grads", "--seed", "3", "--png", "p.png"}));
    write("cli_reconstruct", "list", args({"--list-models"}));
    write("cli_reconstruct", "missing", args({"--model", "vit-tiny-test"}));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_seeds <corpus dir>\n");
        return 2;
    }
    g_root = argv[1];
    safetensors_seeds();
    checkpoint_seeds();
    idx_seeds();
    cifar_seeds();
    image_seeds();
    cli_seeds();
    return 0;
}
