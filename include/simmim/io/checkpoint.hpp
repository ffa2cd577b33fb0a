// simmim/io/checkpoint.hpp: training checkpoints in safetensors.
//
// Tensors: every model parameter under its official name (F32, so the file also loads as model
// weights: simmim_reconstruct and PyTorch ignore/skip the rest), and the AdamW moments as
// "optimizer.exp_avg.<name>" and "optimizer.exp_avg_sq.<name>" in the model's scalar type.
// Metadata: "format" = "simmim-checkpoint-1", "optimizer_steps", and whatever the trainer adds
// (step, seed, full configuration). Since every random draw of training is a function of
// (seed, step), the step is the whole RNG and data-order state. Written atomically.
#pragma once

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "simmim/io/model_io.hpp"
#include "simmim/optim/adamw.hpp"

namespace simmim::io {

inline constexpr const char* kCheckpointFormat = "simmim-checkpoint-1";

template <class T>
void save_checkpoint(const std::filesystem::path& path, const ParamArena<T>& params, const AdamW<T>& opt,
                     std::map<std::string, std::string> metadata) {
    TensorFile file;
    export_params(file, params, false, {}, std::is_same_v<T, double>);
    for (const auto& p : params.params()) {
        const T* m = opt.exp_avg().data() + p.offset;
        const T* v = opt.exp_avg_sq().data() + p.offset;
        file.set<T>("optimizer.exp_avg." + p.name, std::span<const T>(m, p.size), p.shape);
        file.set<T>("optimizer.exp_avg_sq." + p.name, std::span<const T>(v, p.size), p.shape);
    }
    metadata["format"] = kCheckpointFormat;
    metadata["optimizer_steps"] = std::to_string(opt.steps());
    file.metadata = std::move(metadata);
    write_safetensors(path, file);
}

/// Restores parameters and optimizer state; returns the metadata. Throws naming the file if it is not
/// a simmim checkpoint of this format or does not match the model.
/// A non-negative integer metadata value; SafetensorsError naming the file and the key otherwise.
inline std::int64_t metadata_count(const std::map<std::string, std::string>& metadata, const std::string& key, const std::string& file) {
    const auto it = metadata.find(key);
    if (it == metadata.end()) throw SafetensorsError(file + ": checkpoint metadata has no '" + key + "'");
    std::int64_t value = -1;
    const char* begin = it->second.data();
    const char* end = begin + it->second.size();
    const auto [ptr, ec] = std::from_chars(begin, end, value);
    if (ec != std::errc{} || ptr != end || value < 0)
        throw SafetensorsError(file + ": checkpoint metadata '" + key + "' is '" + it->second + "', expected a non-negative integer");
    return value;
}

template <class T>
std::map<std::string, std::string> load_checkpoint(const std::filesystem::path& path, ParamArena<T>& params, AdamW<T>& opt) {
    const TensorFile file = read_safetensors(path);
    const auto fmt = file.metadata.find("format");
    if (fmt == file.metadata.end() || fmt->second != kCheckpointFormat)
        throw SafetensorsError(path.string() + ": not a simmim training checkpoint (metadata 'format' is '" +
                               (fmt == file.metadata.end() ? std::string("<absent>") : fmt->second) + "', expected '" +
                               kCheckpointFormat + "')");
    import_params(params, file);
    AlignedVector<T> m(params.size()), v(params.size());
    for (const auto& p : params.params()) {
        const auto em = file.get<T>("optimizer.exp_avg." + p.name, p.shape);
        const auto ev = file.get<T>("optimizer.exp_avg_sq." + p.name, p.shape);
        std::copy(em.begin(), em.end(), m.begin() + p.offset);
        std::copy(ev.begin(), ev.end(), v.begin() + p.offset);
    }
    opt.exp_avg() = std::move(m);
    opt.exp_avg_sq() = std::move(v);
    opt.set_steps(metadata_count(file.metadata, "optimizer_steps", path.string()));
    return file.metadata;
}

}  // namespace simmim::io
