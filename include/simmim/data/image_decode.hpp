// simmim/data/image_decode.hpp: JPEG and PNG decoding for ImageFolderDataset, with libjpeg-turbo and
// libpng (link -ljpeg -lpng; the simmim::data target does), safe on hostile files.
//
// The decoder is chosen by the file's first bytes (PNG signature 89 50 4E 47 0D 0A 1A 0A, JPEG
// SOI FF D8 FF), never by its name; anything else is refused. Every failure is a DataError naming the
// file (and, for a decoder error, the decoder and its message); the decoders never abort or print. The
// header is read first: an image with a zero side or more than ImageDecodeLimits::max_pixels pixels
// (default 64 Mi = 8192 x 8192) is refused before any pixel buffer is allocated.
//
// Damaged files are errors, not images: a decode reads the file to its end (JPEG EOI, PNG IEND) and
//   JPEG  libjpeg's warnings about damage are errors: "Premature end of JPEG file" (data cut short),
//         every "Corrupt JPEG data: ..." (premature end of a data segment, extraneous bytes, bad Huffman
//         or arithmetic code, lost restart markers), an inconsistent progression or invalid SOS
//         parameters. (libjpeg would go on and fill the missing part grey.) Other warnings (unknown
//         JFIF revision or Adobe transform) are dropped. JPEG has no checksum: a bit flip in the
//         entropy-coded data is found only when it desynchronises the decoder (a third of the
//         single-bit flips in the tests' file); a flip in a coefficient's magnitude bits is not.
//   PNG   the chunks are walked first: each must fit in the file, up to IEND (a length that does not
//         fit means a file cut short or a corrupt length, refused before libpng allocates it); a CRC
//         mismatch in any chunk, critical or ancillary, is an error (libpng would only warn and drop an
//         ancillary chunk); libpng's warnings are dropped.
// Such errors, and any error in the image data of a file whose header reads, say "damaged JPEG" /
// "damaged PNG".
//
// Channels (the file's own, as the dataset always kept them):
//   PNG   grey 1, grey + alpha 2, RGB 3, RGBA 4; a palette becomes RGB (RGBA if it has a tRNS chunk),
//         a tRNS chunk on grey or RGB adds an alpha channel; 1/2/4-bit grey is scaled to 0..255;
//         16-bit samples keep their high byte; interlaced files are de-interlaced; gamma is ignored.
//   JPEG  greyscale 1, YCbCr / RGB 3, CMYK / YCCK 3: R = C * K / 255 (likewise G from M, B from Y)
//         on the stored (Adobe, inverted) values; other component counts are refused.
//
// setjmp/longjmp: both libraries report errors by longjmp. Each call into them happens in a function
// that holds no C++ object with a destructor (only pointers and plain structs); the buffers and the
// decoder state are owned by the calling frame, which the longjmp never crosses, and are released by
// RAII there.
#pragma once

#include <csetjmp>
#include <cstdio>  // FILE, which jpeglib.h uses without including it

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "simmim/data/dataset.hpp"

namespace simmim::data {

/// Default pixel cap of decoding: 64 Mi pixels (8192 x 8192, 256 MiB as RGBA).
inline constexpr std::uint64_t kDefaultMaxImagePixels = std::uint64_t(1) << 26;

/// Limits applied to every decoded image.
struct ImageDecodeLimits {
    std::uint64_t max_pixels = kDefaultMaxImagePixels;  // width * height above this: DataError
};

enum class ImageFormat { Unknown, Jpeg, Png };

/// The format given by the first bytes (PNG signature, JPEG SOI + marker), or Unknown.
inline ImageFormat sniff_image_format(std::span<const std::uint8_t> bytes) noexcept {
    static constexpr std::uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (bytes.size() >= 8 && std::equal(png_signature, png_signature + 8, bytes.begin())) return ImageFormat::Png;
    if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return ImageFormat::Jpeg;
    return ImageFormat::Unknown;
}

/// What a file's header says: the size and channel count that decode_image() returns.
struct ImageInfo {
    ImageFormat format = ImageFormat::Unknown;
    int width = 0, height = 0, channels = 0;
};

namespace detail {

/// Scans beyond this many are refused (a progressive JPEG with many scans costs a full pass each;
/// libjpeg-turbo's own fuzzers stop at 500).
inline constexpr int kMaxJpegScans = 1000;

/// libjpeg state of one decode; owned by the calling C++ frame, released by JpegDecoder.
struct JpegContext {
    jpeg_decompress_struct cinfo;
    jpeg_error_mgr error_manager;
    jpeg_progress_mgr progress;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX + 64];
    bool created;
    bool hit_end;  // the data ended before the decoder was done (libjpeg inserted an EOI)
    bool damaged;  // a warning about damaged data was turned into an error (message holds it)
};

inline void jpeg_on_error(j_common_ptr cinfo) {
    auto* context = static_cast<JpegContext*>(cinfo->client_data);
    (*cinfo->err->format_message)(cinfo, context->message);
    std::longjmp(context->jump, 1);
}

/// Whether libjpeg's current warning reports damaged data: data cut short, every "Corrupt JPEG data"
/// warning (the codes differ between libjpeg versions, the text does not), a broken progression.
inline bool jpeg_warning_means_damage(j_common_ptr cinfo, const char* text) {
    const int code = cinfo->err->msg_code;
    return code == JWRN_JPEG_EOF || code == JWRN_BOGUS_PROGRESSION || code == JWRN_NOT_SEQUENTIAL ||
           std::strncmp(text, "Corrupt JPEG data", 17) == 0;
}

/// Traces (level >= 0) are dropped; a warning (level -1) about damaged data becomes an error (longjmp,
/// as jpeg_on_error); other warnings are dropped.
inline void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    auto* context = static_cast<JpegContext*>(cinfo->client_data);
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) context->hit_end = true;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    if (!jpeg_warning_means_damage(cinfo, text)) return;
    context->damaged = true;
    std::snprintf(context->message, sizeof context->message, "%s", text);
    std::longjmp(context->jump, 1);
}

inline void jpeg_on_progress(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    const auto* dinfo = reinterpret_cast<j_decompress_ptr>(cinfo);
    if (dinfo->input_scan_number > kMaxJpegScans) {
        auto* context = static_cast<JpegContext*>(cinfo->client_data);
        std::snprintf(context->message, sizeof context->message, "more than %d scans", kMaxJpegScans);
        std::longjmp(context->jump, 1);
    }
}

/// Header phase: jpeg_read_header, output colour space, output dimensions. 0 on success, 1 after a
/// libjpeg error (message in context). Holds no object with a destructor (longjmp lands here).
inline int jpeg_read_header_phase(JpegContext& context, const std::uint8_t* data, std::size_t size, long max_memory) {
    context.cinfo.err = jpeg_std_error(&context.error_manager);
    context.error_manager.error_exit = &jpeg_on_error;
    context.error_manager.emit_message = &jpeg_on_message;
    context.cinfo.client_data = &context;
    if (setjmp(context.jump) != 0) return 1;
    jpeg_create_decompress(&context.cinfo);
    context.created = true;
    context.progress.progress_monitor = &jpeg_on_progress;
    context.cinfo.progress = &context.progress;
    context.cinfo.mem->max_memory_to_use = max_memory;  // no backing store: an error past this
    jpeg_mem_src(&context.cinfo, data, static_cast<unsigned long>(size));
    jpeg_read_header(&context.cinfo, TRUE);
    switch (context.cinfo.num_components) {
        case 1: context.cinfo.out_color_space = JCS_GRAYSCALE; break;
        case 3: context.cinfo.out_color_space = JCS_RGB; break;
        case 4: context.cinfo.out_color_space = JCS_CMYK; break;  // CMYK or YCCK: converted to RGB afterwards
        default:
            std::snprintf(context.message, sizeof context.message, "%d colour components (expected 1, 3 or 4)",
                          context.cinfo.num_components);
            return 1;
    }
    jpeg_calc_output_dimensions(&context.cinfo);
    return 0;
}

/// Pixel phase: decodes every scanline into `out` (output_height rows of `row_bytes`), then reads the
/// rest of the file up to its EOI marker.
inline int jpeg_read_pixels_phase(JpegContext& context, std::uint8_t* out, std::size_t row_bytes) {
    if (setjmp(context.jump) != 0) return 1;
    jpeg_start_decompress(&context.cinfo);
    while (context.cinfo.output_scanline < context.cinfo.output_height) {
        JSAMPROW row = out + static_cast<std::size_t>(context.cinfo.output_scanline) * row_bytes;
        if (jpeg_read_scanlines(&context.cinfo, &row, 1) != 1) {
            std::snprintf(context.message, sizeof context.message, "decoder returned no scanline at row %u",
                          context.cinfo.output_scanline);
            return 1;
        }
    }
    jpeg_finish_decompress(&context.cinfo);
    return 0;
}

/// Check phase: entropy-decodes every block (jpeg_read_coefficients: no inverse DCT, no colour
/// conversion, no pixel buffer) and reads the rest of the file up to its EOI marker, so that every
/// damage warning a full decode would give is given.
inline int jpeg_check_phase(JpegContext& context) {
    if (setjmp(context.jump) != 0) return 1;
    if (jpeg_read_coefficients(&context.cinfo) == nullptr) {
        std::snprintf(context.message, sizeof context.message, "decoder returned no coefficients");
        return 1;
    }
    jpeg_finish_decompress(&context.cinfo);
    return 0;
}

/// libpng state of one decode; owned by the calling C++ frame, released by PngDecoder.
struct PngContext {
    png_structp png;
    png_infop info;
    const std::uint8_t* data;
    std::size_t size, position;
    int passes;    // 1, or 7 for an interlaced image (png_set_interlace_handling)
    bool hit_end;  // the data ended before libpng was done
    char message[256];
};

inline void png_on_error(png_structp png, png_const_charp message) {
    auto* context = static_cast<PngContext*>(png_get_error_ptr(png));
    std::snprintf(context->message, sizeof context->message, "%s", message != nullptr ? message : "error");
    png_longjmp(png, 1);
}

inline void png_on_warning(png_structp, png_const_charp) {}  // dropped

inline void png_on_read(png_structp png, png_bytep out, png_size_t length) {
    auto* context = static_cast<PngContext*>(png_get_io_ptr(png));
    if (length > context->size - context->position) {
        context->hit_end = true;
        png_error(png, "unexpected end of file (truncated)");
    }
    std::memcpy(out, context->data + context->position, length);
    context->position += length;
}

/// Header phase: png_read_info and the transformations to 8-bit 1..4 channels. 0 on success, 1
/// after a libpng error. Holds no object with a destructor (longjmp lands here).
inline int png_read_header_phase(PngContext& context) {
    if (setjmp(png_jmpbuf(context.png)) != 0) return 1;
    png_set_read_fn(context.png, &context, &png_on_read);
    png_set_keep_unknown_chunks(context.png, PNG_HANDLE_CHUNK_NEVER, nullptr, 0);
    // a CRC mismatch is an error in every chunk (by default libpng only warns about an ancillary one and drops it)
    png_set_crc_action(context.png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_read_info(context.png, context.info);
    const int color_type = png_get_color_type(context.png, context.info);
    const int bit_depth = png_get_bit_depth(context.png, context.info);
    if (bit_depth == 16) png_set_strip_16(context.png);  // the high byte
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(context.png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(context.png);
    if (png_get_valid(context.png, context.info, PNG_INFO_tRNS) != 0) png_set_tRNS_to_alpha(context.png);
    context.passes = png_set_interlace_handling(context.png);
    png_read_update_info(context.png, context.info);
    return 0;
}

/// Pixel phase: the whole image into the rows given, then the chunks after the image data up to IEND
/// (their CRCs checked).
inline int png_read_pixels_phase(PngContext& context, png_bytep* rows) {
    if (setjmp(png_jmpbuf(context.png)) != 0) return 1;
    png_read_image(context.png, rows);
    png_read_end(context.png, nullptr);
    return 0;
}

/// Check phase: every row of every pass through one row buffer, then the chunks up to IEND.
inline int png_check_phase(PngContext& context, png_bytep row) {
    if (setjmp(png_jmpbuf(context.png)) != 0) return 1;
    const png_uint_32 height = png_get_image_height(context.png, context.info);
    for (int pass = 0; pass < context.passes; ++pass)
        for (png_uint_32 y = 0; y < height; ++y) png_read_row(context.png, row, nullptr);
    png_read_end(context.png, nullptr);
    return 0;
}

/// Owns a JpegContext: jpeg_destroy_decompress on scope exit, however the decode ended.
struct JpegDecoder {
    JpegContext context{};
    JpegDecoder() = default;
    JpegDecoder(const JpegDecoder&) = delete;
    JpegDecoder& operator=(const JpegDecoder&) = delete;
    ~JpegDecoder() {
        if (context.created) jpeg_destroy_decompress(&context.cinfo);
    }
};

/// Owns a PngContext: png_destroy_read_struct on scope exit.
struct PngDecoder {
    PngContext context{};
    PngDecoder(const PngDecoder&) = delete;
    PngDecoder& operator=(const PngDecoder&) = delete;
    PngDecoder(const std::uint8_t* data, std::size_t size) {
        context.data = data;
        context.size = size;
        context.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &context, &png_on_error, &png_on_warning);
        if (context.png != nullptr) context.info = png_create_info_struct(context.png);
    }
    ~PngDecoder() {
        if (context.png != nullptr) png_destroy_read_struct(&context.png, context.info != nullptr ? &context.info : nullptr, nullptr);
    }
};

/// libjpeg's memory ceiling for an image within `limits`: its coefficient buffers (progressive
/// JPEG: 2 bytes per coefficient, up to 4 full-resolution components) with room for padding.
inline long jpeg_memory_ceiling(const ImageDecodeLimits& limits) {
    const std::uint64_t cap = std::min<std::uint64_t>(limits.max_pixels, std::uint64_t(1) << 40);
    return static_cast<long>(cap * 10 + (std::uint64_t(64) << 20));
}

inline std::string hex_prefix(std::span<const std::uint8_t> bytes) {
    std::string text;
    char byte[4];
    for (std::size_t i = 0; i < std::min<std::size_t>(bytes.size(), 8); ++i) {
        std::snprintf(byte, sizeof byte, i ? " %02X" : "%02X", bytes[i]);
        text += byte;
    }
    return bytes.empty() ? std::string("an empty file") : "starts with " + text;
}

/// DataError unless 0 < width, height and width * height <= limits.max_pixels.
inline void check_image_size(const std::string& name, const char* format, std::uint64_t width, std::uint64_t height,
                             const ImageDecodeLimits& limits) {
    if (width == 0 || height == 0)
        throw DataError(name + ": " + format + " image of " + std::to_string(width) + " x " + std::to_string(height) +
                        " pixels has a zero side");
    if (width * height > limits.max_pixels)
        throw DataError(name + ": " + format + " image of " + std::to_string(width) + " x " + std::to_string(height) + " = " +
                        std::to_string(width * height) + " pixels exceeds the limit of " + std::to_string(limits.max_pixels) +
                        " pixels (ImageDecodeLimits::max_pixels)");
}

/// How far a decode goes: the header only, the whole file checked without a pixel buffer, or the pixels.
enum class DecodeDepth { header, check, pixels };

/// What a failed decode found, for the callers that sort failures: the data ended early (`hit_end`: a
/// header cut by a prefix, or a file cut short), or the file is damaged (cut short, a CRC mismatch,
/// corrupt entropy-coded data).
struct DecodeOutcome {
    bool hit_end = false;
    bool damaged = false;
};

/// Header, check or pixels (into `pixels`, needed for DecodeDepth::pixels) of a JPEG.
inline ImageInfo decode_jpeg(std::span<const std::uint8_t> bytes, const std::string& name, const ImageDecodeLimits& limits,
                             DecodeDepth depth, std::vector<std::uint8_t>* pixels, DecodeOutcome* outcome) {
    JpegDecoder decoder;
    JpegContext& context = decoder.context;
    // damaged: a damage warning (cut short, corrupt data), or image data that does not decode although the header did
    const auto fail = [&](const char* phase) {
        const bool damaged = context.damaged || std::strcmp(phase, "data") == 0;
        if (outcome != nullptr) *outcome = {context.hit_end, damaged};
        return DataError(name + (damaged ? ": damaged JPEG " : ": cannot decode JPEG ") + phase + " (libjpeg-turbo: " + context.message + ")");
    };
    if (jpeg_read_header_phase(context, bytes.data(), bytes.size(), jpeg_memory_ceiling(limits)) != 0) throw fail("header");
    const jpeg_decompress_struct& cinfo = context.cinfo;
    check_image_size(name, "JPEG", cinfo.image_width, cinfo.image_height, limits);
    const int components = cinfo.output_components;  // 1, 3 or 4 (CMYK)
    ImageInfo info{ImageFormat::Jpeg, static_cast<int>(cinfo.output_width), static_cast<int>(cinfo.output_height),
                   components == 4 ? 3 : components};
    if (depth == DecodeDepth::header) return info;
    if (depth == DecodeDepth::check) {
        if (jpeg_check_phase(context) != 0) throw fail("data");
        return info;
    }

    const std::size_t row_bytes = static_cast<std::size_t>(info.width) * static_cast<std::size_t>(components);
    std::vector<std::uint8_t> decoded(row_bytes * static_cast<std::size_t>(info.height));
    if (jpeg_read_pixels_phase(context, decoded.data(), row_bytes) != 0) throw fail("data");
    if (components == 4) {  // inverted CMYK (what libjpeg gives for Adobe CMYK and YCCK) -> RGB
        const std::size_t count = static_cast<std::size_t>(info.width) * static_cast<std::size_t>(info.height);
        for (std::size_t i = 0; i < count; ++i) {
            const unsigned k = decoded[4 * i + 3];
            for (std::size_t c = 0; c < 3; ++c)
                decoded[3 * i + c] = static_cast<std::uint8_t>((decoded[4 * i + c] * k + 127) / 255);
        }
        decoded.resize(3 * count);
    }
    *pixels = std::move(decoded);
    return info;
}

/// "" when the chunks of a PNG held in memory fit in it: from the signature on, each chunk's length,
/// type, data and CRC lie within the bytes, up to IEND (`whole`), or up to the first IDAT (the header;
/// its data may lie beyond a prefix). Otherwise what is wrong: a file cut short, or a corrupt length.
/// Checked before libpng runs, which allocates a chunk's declared length before reading it (a 600-byte
/// file declaring a 1 GiB tEXt chunk cost a second and a gigabyte).
inline std::string png_chunk_problem(std::span<const std::uint8_t> bytes, bool whole) {
    std::size_t at = 8;  // after the signature
    for (;;) {
        if (bytes.size() - at < 8)
            return at == bytes.size() ? std::string("no IEND chunk: the file ends after ") + std::to_string(at) + " bytes"
                                      : "a chunk header cut by the end of the file at byte " + std::to_string(at);
        const std::uint64_t length = std::uint64_t(bytes[at]) << 24 | std::uint64_t(bytes[at + 1]) << 16 | std::uint64_t(bytes[at + 2]) << 8 | bytes[at + 3];
        std::string type;  // letters as they are, other bytes as \xHH
        for (std::size_t i = 4; i < 8; ++i) {
            const std::uint8_t c = bytes[at + i];
            char text[8];
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) std::snprintf(text, sizeof text, "%c", c);
            else std::snprintf(text, sizeof text, "\\x%02X", c);
            type += text;
        }
        if (!whole && type == "IDAT") return "";
        const std::uint64_t left = bytes.size() - at - 8;
        if (length + 4 > left)
            return "chunk " + type + " at byte " + std::to_string(at) + " declares " + std::to_string(length) +
                   " bytes of data and a CRC, but the file has " + std::to_string(left) + " bytes left";
        at += 8 + static_cast<std::size_t>(length) + 4;
        if (type == "IEND") return "";
    }
}

/// Header, check or pixels (into `pixels`, needed for DecodeDepth::pixels) of a PNG.
inline ImageInfo decode_png(std::span<const std::uint8_t> bytes, const std::string& name, const ImageDecodeLimits& limits,
                            DecodeDepth depth, std::vector<std::uint8_t>* pixels, DecodeOutcome* outcome) {
    if (const std::string problem = png_chunk_problem(bytes, depth != DecodeDepth::header); !problem.empty()) {
        if (outcome != nullptr) *outcome = {true, true};
        throw DataError(name + ": damaged PNG (" + problem + ")");
    }
    PngDecoder decoder(bytes.data(), bytes.size());
    PngContext& context = decoder.context;
    if (context.png == nullptr || context.info == nullptr) throw DataError(name + ": cannot decode PNG: libpng could not start");
    // damaged: cut short, a CRC mismatch, or image data that does not decode although the header did
    const auto fail = [&](const char* phase) {
        const bool damaged = context.hit_end || std::strstr(context.message, "CRC") != nullptr || std::strcmp(phase, "data") == 0;
        if (outcome != nullptr) *outcome = {context.hit_end, damaged};
        return DataError(name + (damaged ? ": damaged PNG " : ": cannot decode PNG ") + phase + " (libpng: " + context.message + ")");
    };
    if (png_read_header_phase(context) != 0) throw fail("header");
    const png_uint_32 width = png_get_image_width(context.png, context.info);
    const png_uint_32 height = png_get_image_height(context.png, context.info);
    check_image_size(name, "PNG", width, height, limits);
    const int channels = png_get_channels(context.png, context.info);
    const std::size_t row_bytes = png_get_rowbytes(context.png, context.info);
    if (channels < 1 || channels > 4 || png_get_bit_depth(context.png, context.info) != 8 ||
        row_bytes != static_cast<std::size_t>(width) * static_cast<std::size_t>(channels))
        throw DataError(name + ": cannot decode PNG: unexpected layout after conversion (" + std::to_string(channels) +
                        " channels, " + std::to_string(row_bytes) + " bytes per row of " + std::to_string(width) + " pixels)");
    ImageInfo info{ImageFormat::Png, static_cast<int>(width), static_cast<int>(height), channels};
    if (depth == DecodeDepth::header) return info;
    if (depth == DecodeDepth::check) {
        std::vector<std::uint8_t> row(row_bytes);
        if (png_check_phase(context, row.data()) != 0) throw fail("data");
        return info;
    }

    std::vector<std::uint8_t> decoded(row_bytes * height);
    std::vector<png_bytep> rows(height);
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = decoded.data() + static_cast<std::size_t>(y) * row_bytes;
    if (png_read_pixels_phase(context, rows.data()) != 0) throw fail("data");
    *pixels = std::move(decoded);
    return info;
}

/// Header, check or whole decode of a file held in memory, by its first bytes.
inline ImageInfo decode_any(std::span<const std::uint8_t> bytes, const std::string& name, const ImageDecodeLimits& limits,
                            DecodeDepth depth, std::vector<std::uint8_t>* pixels = nullptr, DecodeOutcome* outcome = nullptr) {
    switch (sniff_image_format(bytes)) {
        case ImageFormat::Jpeg: return decode_jpeg(bytes, name, limits, depth, pixels, outcome);
        case ImageFormat::Png: return decode_png(bytes, name, limits, depth, pixels, outcome);
        case ImageFormat::Unknown: break;
    }
    throw DataError(name + ": not a JPEG or PNG file (" + hex_prefix(bytes) +
                    "; only JPEG and PNG are decoded, chosen by content)");
}

/// Reads the file at `path` whole and checks that it decodes completely (DecodeDepth::check): what
/// ImageFolderDataset::validate() does with each file. DataError naming the file otherwise (a file larger
/// than the memory left included); `outcome` says whether the file is damaged. std::bad_alloc passes
/// through: running out of memory is not a verdict on the file.
inline ImageInfo check_image_file(const std::filesystem::path& path, const ImageDecodeLimits& limits, DecodeOutcome* outcome) {
    return decode_any(read_file(path), path.string(), limits, DecodeDepth::check, nullptr, outcome);
}

}  // namespace detail

/// The header of a JPEG or PNG file held in memory (`name` names it in messages): format, size and
/// the channel count decode_image() gives. DataError naming the file if the format is not JPEG or
/// PNG, the header is malformed, a side is zero or the image exceeds limits.max_pixels.
inline ImageInfo read_image_info(std::span<const std::uint8_t> bytes, const std::string& name, const ImageDecodeLimits& limits = {}) {
    return detail::decode_any(bytes, name, limits, detail::DecodeDepth::header);
}

/// Decodes a JPEG or PNG file held in memory into 8-bit interleaved pixels with the channels listed at
/// the top of this header (label -1). DataError naming the file for anything it cannot decode, as
/// read_image_info(), a decoder error in the image data, or damaged data (see the top of this header:
/// "damaged JPEG" / "damaged PNG"); std::bad_alloc becomes a DataError too.
inline RawImage decode_image(std::span<const std::uint8_t> bytes, const std::string& name, const ImageDecodeLimits& limits = {}) {
    return detail::rethrow_out_of_memory(name, [&] {
        RawImage image;
        const ImageInfo info = detail::decode_any(bytes, name, limits, detail::DecodeDepth::pixels, &image.pixels);
        image.width = info.width;
        image.height = info.height;
        image.channels = info.channels;
        return image;
    });
}

/// read_image_info() of a file, reading only its first 64 KiB unless the header lies beyond them.
/// DataError naming the file if it cannot be read.
inline ImageInfo read_image_info(const std::filesystem::path& path, const ImageDecodeLimits& limits = {}) {
    constexpr std::size_t kPrefix = 64 * 1024;
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec || size <= kPrefix) return read_image_info(detail::read_file(path), path.string(), limits);
    std::vector<std::uint8_t> prefix(kPrefix);
    {
        std::ifstream in(path, std::ios::binary);
        in.read(reinterpret_cast<char*>(prefix.data()), static_cast<std::streamsize>(prefix.size()));
        if (static_cast<std::size_t>(in.gcount()) != prefix.size()) return read_image_info(detail::read_file(path), path.string(), limits);
    }
    detail::DecodeOutcome outcome;
    try {
        return detail::decode_any(prefix, path.string(), limits, detail::DecodeDepth::header, nullptr, &outcome);
    } catch (const DataError&) {
        if (!outcome.hit_end) throw;
    }
    return read_image_info(detail::read_file(path), path.string(), limits);  // a header longer than the prefix
}

}  // namespace simmim::data
