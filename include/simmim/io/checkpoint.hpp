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
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <new>
#include <set>
#include <string>
#include <tuple>
#include <vector>

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

/// Restores parameters and optimizer state from a checkpoint written by save_checkpoint(); returns its
/// metadata. Transactional: everything is read and checked before anything changes, so on any error
/// (a SafetensorsError naming the file and, where there is one, the tensor, key or element) `params`
/// and `opt` are exactly as they were. Checked: metadata 'format' is this format and
/// 'optimizer_steps' a non-negative integer; every parameter and both moments of every parameter are
/// present with the parameter's shape and a floating-point dtype; no other tensor is present; every
/// value is finite and every exp_avg_sq value is >= 0. Memory: see read_safetensors (std::bad_alloc
/// becomes a SafetensorsError naming the file).
template <class T>
std::map<std::string, std::string> load_checkpoint(const std::filesystem::path& path, ParamArena<T>& params, AdamW<T>& opt) {
    const std::string name = path.string();
    try {
        const TensorFile file = read_safetensors(path);
        const auto fmt = file.metadata.find("format");
        if (fmt == file.metadata.end() || fmt->second != kCheckpointFormat)
            throw SafetensorsError(name + ": not a simmim training checkpoint (metadata 'format' is '" +
                                   (fmt == file.metadata.end() ? std::string("<absent>") : fmt->second) + "', expected '" +
                                   kCheckpointFormat + "')");
        const std::int64_t steps = metadata_count(file.metadata, "optimizer_steps", name);

        LoadOptions model_tensors;  // parameters: present, shaped, floating; nothing unexpected outside "optimizer."
        const std::vector<T> values = detail::staged_params(params, file, model_tensors);
        const auto require_finite = [&](const std::string& tensor, const T* data, std::size_t count, bool non_negative) {
            for (std::size_t i = 0; i < count; ++i)
                if (!std::isfinite(static_cast<double>(data[i])) || (non_negative && data[i] < T(0)))
                    throw SafetensorsError(name + ": tensor '" + tensor + "' element " + std::to_string(i) + " is " +
                                           std::to_string(static_cast<double>(data[i])) + ", expected a finite" +
                                           (non_negative ? " non-negative" : "") + " value");
        };
        for (const auto& p : params.params()) require_finite(p.name, values.data() + p.offset, p.size, false);

        AlignedVector<T> m(params.size()), v(params.size());
        std::set<std::string> optimizer_names;
        for (const auto& p : params.params()) {
            for (const auto& [prefix, target, non_negative] :
                 {std::tuple{"optimizer.exp_avg.", &m, false}, std::tuple{"optimizer.exp_avg_sq.", &v, true}}) {
                const std::string tensor = prefix + p.name;
                optimizer_names.insert(tensor);
                const auto moment = detail::checked_float_tensor(file, name, tensor, p.shape, "optimizer tensor").template to<T>();
                require_finite(tensor, moment.data(), moment.size(), non_negative);
                std::copy(moment.begin(), moment.end(), target->begin() + static_cast<std::ptrdiff_t>(p.offset));
            }
        }
        for (const auto& n : file.names())
            if (n.starts_with("optimizer.") && !optimizer_names.count(n))
                throw SafetensorsError(name + ": unexpected tensor '" + n + "' (not an AdamW moment of this model's parameters)");

        // Every check passed: commit (nothing below can throw).
        std::copy(values.begin(), values.end(), params.values());
        opt.exp_avg() = std::move(m);
        opt.exp_avg_sq() = std::move(v);
        opt.set_steps(steps);
        return file.metadata;
    } catch (const std::bad_alloc&) {
        const MemoryAvailable available = available_memory();
        throw SafetensorsError(name + ": out of memory while loading the checkpoint (" +
                               (available.limited_by.empty() ? std::string("no memory limit known")
                                                             : format_bytes(available.bytes) + " available, limited by " +
                                                                   available.limited_by) +
                               ")");
    }
}

}  // namespace simmim::io
