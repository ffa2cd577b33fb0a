// simmim/data/open.hpp: open a dataset by path, recognising its format, with the normalisation and
// canvas that go with it.
//   "fashion-mnist" (or a directory holding {train,t10k}-images-idx3-ubyte[.gz]): IDX, 28x28 grey
//       on a 32x32 canvas when the model is 32 px; Fashion-MNIST statistics ("mnist" in the path: MNIST's)
//   a directory holding data_batch_1.bin (CIFAR-10) or train.bin (CIFAR-100): CIFAR statistics
//   any other directory: an image folder (JPEG/PNG, recursive), ImageNet statistics
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "simmim/data/augment.hpp"
#include "simmim/data/cifar.hpp"
#include "simmim/data/idx.hpp"
#include "simmim/data/image_folder.hpp"

namespace simmim::data {

struct OpenedDataset {
    std::shared_ptr<const Dataset> train;
    std::shared_ptr<const Dataset> eval;  // held-out split where the format has one, else the train set
    std::string format;                   // "idx", "cifar10", "cifar100", "folder"
    Normalization norm;
    int native_size = 0;                  // side of the stored images (0: varies)
    std::size_t scanned = 0;              // image files found (image folders; 0 for the other formats)
    std::size_t skipped = 0;              // files skipped as unreadable or damaged (image folders)
    std::size_t damaged = 0;              // of the skipped: damaged (cut short, corrupt)
    std::vector<std::string> first_skipped;          // the first (up to 5) skipped files
    std::vector<std::string> first_skipped_reasons;  // and why each was skipped
};

/// Opens `path` (or the Debian Fashion-MNIST for "fashion-mnist"). DataError naming the path if it
/// does not exist or holds nothing usable.
inline OpenedDataset open_dataset(const std::string& path_or_name) {
    namespace fs = std::filesystem;
    const fs::path path = path_or_name == "fashion-mnist" ? fs::path(kDefaultFashionMnistDir) : fs::path(path_or_name);
    std::error_code ec;
    if (!fs::is_directory(path, ec)) throw DataError("dataset '" + path.string() + "' is not a directory (or does not exist)");
    OpenedDataset out;
    const auto has = [&](const char* name) { return fs::exists(path / name, ec) || fs::exists(path / (std::string(name) + ".gz"), ec); };
    if (has("train-images-idx3-ubyte")) {
        out.format = "idx";
        out.train = std::make_shared<IdxDataset>(open_fashion_mnist(path, true));
        out.eval = has("t10k-images-idx3-ubyte") ? std::shared_ptr<const Dataset>(std::make_shared<IdxDataset>(open_fashion_mnist(path, false)))
                                                 : out.train;
        const bool mnist = path.string().find("fashion") == std::string::npos && path.string().find("mnist") != std::string::npos;
        out.norm = mnist ? kMnistNorm : kFashionMnistNorm;
        out.native_size = 28;
    } else if (fs::exists(path / "data_batch_1.bin", ec) || fs::exists(path / "train.bin", ec)) {
        const int which = fs::exists(path / "data_batch_1.bin", ec) ? 10 : 100;
        out.format = which == 10 ? "cifar10" : "cifar100";
        out.train = std::make_shared<CifarDataset>(path, true, which);
        const bool has_test = fs::exists(path / (which == 10 ? "test_batch.bin" : "test.bin"), ec);
        out.eval = has_test ? std::shared_ptr<const Dataset>(std::make_shared<CifarDataset>(path, false, which)) : out.train;
        out.norm = which == 10 ? kCifar10Norm : Normalization{{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
        out.native_size = 32;
    } else {
        out.format = "folder";
        auto folder = std::make_shared<ImageFolderDataset>(path);
        const ValidationReport report = folder->validate();
        out.scanned = report.kept + report.skipped;
        out.skipped = report.skipped;
        out.damaged = report.damaged;
        out.first_skipped = report.first_skipped_names;
        out.first_skipped_reasons = report.first_skipped_reasons;
        out.train = folder;
        out.eval = folder;
        out.norm = kImageNetNorm;
    }
    return out;
}

/// The official pretraining augmentation for a model of `image_size` px and `channels` channels.
inline AugmentConfig pretrain_augmentation(const OpenedDataset& d, int image_size, int channels) {
    AugmentConfig cfg;
    cfg.out_size = image_size;
    cfg.out_channels = channels;
    cfg.canvas = d.format == "idx" && image_size >= 28 && image_size < 56 ? image_size : 0;
    cfg.norm = d.norm;
    if (cfg.norm.mean.size() == 3 && channels == 1) {  // a grey model on RGB data: luminance statistics
        const auto lum = [](const std::vector<float>& v) { return 0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2]; };
        cfg.norm = Normalization{{lum(cfg.norm.mean)}, {lum(cfg.norm.std)}};
    } else if (cfg.norm.mean.size() == 1 && channels == 3) {  // an RGB model on grey data (replicated channels)
        cfg.norm = Normalization{std::vector<float>(3, cfg.norm.mean[0]), std::vector<float>(3, cfg.norm.std[0])};
    }
    return cfg;
}

/// The deterministic evaluation transform: same canvas, resize and normalisation, no crop or flip.
inline AugmentConfig eval_transform(const OpenedDataset& d, int image_size, int channels) {
    AugmentConfig cfg = pretrain_augmentation(d, image_size, channels);
    cfg.random_resized_crop = false;
    cfg.hflip = false;
    return cfg;
}

/// The fine-tuning transform for small grey (or colour) images: the eval transform's canvas, resize and
/// normalisation, then RandomCrop(image_size, padding=crop_padding, fill 0), the horizontal flip with
/// probability hflip_prob and RandomErasing with probability erase_prob (augment.hpp). All zero: the eval
/// transform.
inline AugmentConfig finetune_augmentation(const OpenedDataset& d, int image_size, int channels, int crop_padding, double hflip_prob,
                                           double erase_prob) {
    AugmentConfig cfg = eval_transform(d, image_size, channels);
    cfg.crop_padding = crop_padding;
    cfg.hflip = hflip_prob > 0.0;
    cfg.hflip_prob = hflip_prob;
    cfg.erase_prob = erase_prob;
    return cfg;
}

}  // namespace simmim::data
