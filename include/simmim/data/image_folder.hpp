// simmim/data/image_folder.hpp: a directory tree of JPEG / PNG files, torchvision ImageFolder style.
//
//   root/cat/001.jpg   -> label 0      root/dog/x/002.png -> label 1      root/003.png -> label -1
//
// Classes are the first-level subdirectories that hold at least one image (anywhere below them),
// in sorted order. Files and directories whose names start with '.' are ignored; symbolic links
// to directories below root are not followed. Images are decoded in get() with stb_image, keeping
// the file's own channel count (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; 16-bit PNGs become 8-bit).
//
// stb_image: this header compiles stb_image's implementation with static linkage into every
// translation unit that includes it (STB_IMAGE_STATIC), so no separate .c file is needed. If
// stb_image.h was already included before this header, that inclusion is used as it is and the
// program must provide the implementation itself (STB_IMAGE_IMPLEMENTATION in one TU).
#pragma once

#ifndef STBI_INCLUDE_STB_IMAGE_H
#pragma GCC diagnostic push  // stb_image is C-style code: keep its warnings out of the user's build
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuseless-cast"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#if __has_include(<stb_image.h>)
#include <stb_image.h>
#else
#include <stb/stb_image.h>  // Debian's libstb-dev without -I/usr/include/stb
#endif
#undef STB_IMAGE_IMPLEMENTATION  // a later #include <stb_image.h> must not expand it again
#undef STB_IMAGE_STATIC
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "simmim/data/dataset.hpp"

namespace simmim::data {

/// Outcome of ImageFolderDataset::validate().
struct ValidationReport {
    std::size_t kept = 0, skipped = 0;
    std::vector<std::string> first_skipped_names;  // paths of the first (up to 5) unreadable files
};

class ImageFolderDataset final : public Dataset {
public:
    /// Scans `root` recursively for *.jpg, *.jpeg, *.png (any case); nothing is decoded yet.
    /// DataError if root is not a directory or holds no image files.
    explicit ImageFolderDataset(const std::filesystem::path& root) : root_(root) {
        namespace fs = std::filesystem;
        std::error_code ec;
        if (!fs::is_directory(root, ec)) throw DataError("ImageFolder " + root.string() + ": not a directory");
        std::vector<fs::path> paths;
        fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
        if (ec) throw DataError("ImageFolder " + root.string() + ": cannot list directory (" + ec.message() + ")");
        for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (ec) throw DataError("ImageFolder " + root.string() + ": error while listing (" + ec.message() + ")");
            const fs::path& path = it->path();
            if (path.filename().string().starts_with(".")) {
                if (it->is_directory(ec)) it.disable_recursion_pending();
                continue;
            }
            if (it->is_regular_file(ec) && has_image_extension(path)) paths.push_back(path);
        }
        std::sort(paths.begin(), paths.end());
        if (paths.empty()) throw DataError("ImageFolder " + root.string() + ": no .jpg/.jpeg/.png files found");

        // First path component below root names the class; files directly in root have none.
        std::map<std::string, int> class_of;
        for (const auto& path : paths) {
            const fs::path rel = path.lexically_relative(root);
            if (std::distance(rel.begin(), rel.end()) > 1) class_of.emplace(rel.begin()->string(), 0);
        }
        for (auto& [name, index] : class_of) {
            index = static_cast<int>(class_names_.size());
            class_names_.push_back(name);
        }
        entries_.reserve(paths.size());
        for (auto& path : paths) {
            const fs::path rel = path.lexically_relative(root);
            const int label = std::distance(rel.begin(), rel.end()) > 1 ? class_of.at(rel.begin()->string()) : -1;
            entries_.push_back({std::move(path), label});
        }
    }

    /// Reads each file's header (stbi_info) and drops the files stb_image cannot read. Labels keep
    /// their values. DataError if no file is left. Not thread-safe: call before sharing the dataset.
    ValidationReport validate() {
        ValidationReport report;
        std::vector<Entry> kept;
        kept.reserve(entries_.size());
        for (auto& entry : entries_) {
            int w = 0, h = 0, c = 0;
            if (stbi_info(entry.path.string().c_str(), &w, &h, &c) == 1) {
                kept.push_back(std::move(entry));
            } else {
                ++report.skipped;
                if (report.first_skipped_names.size() < 5) report.first_skipped_names.push_back(entry.path.string());
            }
        }
        entries_ = std::move(kept);
        report.kept = entries_.size();
        if (entries_.empty())
            throw DataError("ImageFolder " + root_.string() + ": no readable image left after validation (" +
                            std::to_string(report.skipped) + " skipped)");
        return report;
    }

    std::size_t size() const override { return entries_.size(); }

    /// Decodes file `index`; DataError naming the file if it cannot be read or decoded.
    RawImage get(std::size_t index) const override {
        detail::check_index(index, entries_.size(), "ImageFolder " + root_.string());
        const Entry& entry = entries_[index];
        const std::vector<std::uint8_t> bytes = detail::read_file(entry.path);
        if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
            throw DataError(entry.path.string() + ": file of " + std::to_string(bytes.size()) + " bytes is too large to decode");
        int w = 0, h = 0, c = 0;
        stbi_uc* decoded = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &c, 0);
        if (decoded == nullptr)
            throw DataError(entry.path.string() + ": cannot decode image (stb_image: " + stbi_failure_reason() + ")");
        RawImage image;
        image.width = w;
        image.height = h;
        image.channels = c;
        image.pixels.assign(decoded, decoded + static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * static_cast<std::size_t>(c));
        stbi_image_free(decoded);
        image.label = entry.label;
        return image;
    }

    std::string description() const override {
        return "ImageFolder " + root_.string() + " (" + std::to_string(entries_.size()) + " images, " +
               std::to_string(class_names_.size()) + " classes)";
    }

    int num_classes() const override { return static_cast<int>(class_names_.size()); }

    /// Class names (first-level subdirectory names), indexed by label.
    const std::vector<std::string>& class_names() const { return class_names_; }

private:
    struct Entry {
        std::filesystem::path path;
        int label;
    };

    static bool has_image_extension(const std::filesystem::path& path) {
        std::string ext = path.extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
        return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
    }

    std::filesystem::path root_;
    std::vector<Entry> entries_;  // sorted by path
    std::vector<std::string> class_names_;
};

}  // namespace simmim::data
