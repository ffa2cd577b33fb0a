// simmim/data/image_folder.hpp: a directory tree of JPEG / PNG files, torchvision ImageFolder style.
//
//   root/cat/001.jpg   -> label 0      root/dog/x/002.png -> label 1      root/003.png -> label -1
//
// Classes are the first-level subdirectories that hold at least one image (anywhere below them),
// in sorted order. Files and directories whose names start with '.' are ignored; symbolic links
// to directories below root are not followed. validate() checks every file whole and drops the
// unreadable and damaged ones (cut short, corrupt). Images are decoded in get() with libjpeg-turbo or
// libpng, chosen by the file's content (simmim/data/image_decode.hpp), keeping the file's own
// channel count (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; palettes become RGB(A), 16-bit samples 8-bit).
// Images with a zero side or above ImageDecodeLimits::max_pixels (default 64 Mi pixels) are refused.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <map>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "simmim/data/dataset.hpp"
#include "simmim/data/image_decode.hpp"

namespace simmim::data {

/// Outcome of ImageFolderDataset::validate().
struct ValidationReport {
    std::size_t kept = 0, skipped = 0;
    std::size_t damaged = 0;  // of the skipped: JPEG / PNG files cut short or corrupt ("damaged JPEG" / "damaged PNG")
    std::vector<std::string> first_skipped_names;    // paths of the first (up to 5) skipped files, in path order
    std::vector<std::string> first_skipped_reasons;  // why each of them was skipped (the DataError message)
};

class ImageFolderDataset final : public Dataset {
public:
    /// Scans `root` recursively for *.jpg, *.jpeg, *.png (any case); nothing is decoded yet. `limits`
    /// apply to every image later decoded. DataError if root is not a directory or holds no image
    /// files; running out of memory while listing is a DataError naming root too.
    explicit ImageFolderDataset(const std::filesystem::path& root, const ImageDecodeLimits& limits = {})
        : root_(root), limits_(limits) {
        detail::rethrow_out_of_memory("ImageFolder " + root.string() + " (listing the files)", [&] { scan(root); });
    }

    /// Reads each file whole and checks that it decodes to its end (image_decode.hpp, without keeping
    /// pixels), dropping the files that are not JPEG or PNG, are malformed or damaged (cut short, a PNG
    /// CRC mismatch, corrupt JPEG data), or whose size is zero or above the pixel limit. Files are checked
    /// in parallel (OpenMP); the report is the same for any thread count. Labels keep their values.
    /// DataError if no file is left. Not thread-safe: call before sharing the dataset.
    ValidationReport validate() {
        const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(entries_.size());
        std::vector<std::string> reasons(entries_.size());  // empty: kept
        std::vector<char> damaged(entries_.size(), 0);
        // not a verdict on a file: running out of memory (a DataError naming the file, as get() gives) or
        // anything else; the first is thrown after the loop
        std::exception_ptr escaped;
        std::string out_of_memory;
#pragma omp parallel for schedule(dynamic, 1)
        for (std::ptrdiff_t i = 0; i < n; ++i) {
            const auto k = static_cast<std::size_t>(i);
            detail::DecodeOutcome outcome;
            try {
                (void)detail::check_image_file(entries_[k].path, limits_, &outcome);
            } catch (const DataError& e) {
                reasons[k] = e.what();
                damaged[k] = outcome.damaged ? 1 : 0;
            } catch (const std::bad_alloc&) {
#pragma omp critical(simmim_image_folder_validate)
                if (out_of_memory.empty()) out_of_memory = entries_[k].path.string();
            } catch (...) {
#pragma omp critical(simmim_image_folder_validate)
                if (!escaped) escaped = std::current_exception();
            }
        }
        if (escaped) std::rethrow_exception(escaped);
        if (!out_of_memory.empty())
            throw DataError("ImageFolder " + root_.string() + ": out of memory while checking " + out_of_memory + " (std::bad_alloc)");
        ValidationReport report;
        std::vector<Entry> kept;
        kept.reserve(entries_.size());
        for (std::size_t k = 0; k < entries_.size(); ++k) {
            if (reasons[k].empty()) {
                kept.push_back(std::move(entries_[k]));
                continue;
            }
            ++report.skipped;
            report.damaged += damaged[k] != 0;
            if (report.first_skipped_names.size() < 5) {
                report.first_skipped_names.push_back(entries_[k].path.string());
                report.first_skipped_reasons.push_back(std::move(reasons[k]));
            }
        }
        entries_ = std::move(kept);
        report.kept = entries_.size();
        if (entries_.empty())
            throw DataError("ImageFolder " + root_.string() + ": no readable image left after validation (" +
                            std::to_string(report.skipped) + " skipped, " + std::to_string(report.damaged) + " of them damaged)");
        return report;
    }

    std::size_t size() const override { return entries_.size(); }

    /// Decodes file `index` (decode_image); DataError naming the file if it cannot be read or decoded,
    /// is not a JPEG or PNG, is damaged, has a zero side, exceeds the pixel limit, or does not fit in memory.
    RawImage get(std::size_t index) const override {
        detail::check_index(index, entries_.size(), "ImageFolder " + root_.string());
        const Entry& entry = entries_[index];
        RawImage image = decode_image(detail::read_file(entry.path), entry.path.string(), limits_);
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

    /// The limits every decode applies.
    const ImageDecodeLimits& limits() const { return limits_; }

private:
    void scan(const std::filesystem::path& root) {
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
    ImageDecodeLimits limits_;
    std::vector<Entry> entries_;  // sorted by path
    std::vector<std::string> class_names_;
};

}  // namespace simmim::data
