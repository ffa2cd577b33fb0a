// simmim/io/model_io.hpp: model weights <-> safetensors under the official state-dict names.
//
// A file written by save_weights() loads into the official PyTorch model with load_state_dict(strict=True)
// (all tensors F32 in PyTorch layouts), and a state dict saved from PyTorch loads here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <filesystem>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "simmim/core/tensor.hpp"
#include "simmim/io/safetensors.hpp"

namespace simmim::io {

/// Adds every parameter (or, with `prefix`, every gradient as "<prefix><name>") of the arena to `file`
/// as F32 (or F64 when `as_double`).
template <class T>
void export_params(TensorFile& file, const ParamArena<T>& arena, bool gradients = false, const std::string& prefix = {},
                   bool as_double = false) {
    const T* base = gradients ? arena.grads() : arena.values();
    for (const auto& p : arena.params()) {
        const T* v = base + p.offset;
        if (as_double) {
            std::vector<double> d(v, v + p.size);
            file.set<double>(prefix + p.name, std::span<const double>(d), p.shape);
        } else {
            std::vector<float> f(v, v + p.size);
            file.set<float>(prefix + p.name, std::span<const float>(f), p.shape);
        }
    }
}

struct LoadOptions {
    bool allow_unexpected = false;  // ignore tensors that are not parameters (strict=False for extras)
    std::string prefix;             // read "<prefix><name>" instead of "<name>"
    /// Tensors whose names start with one of these are not parameters and are skipped (a training
    /// checkpoint's "optimizer." moments, say).
    std::vector<std::string> ignore_prefixes{"optimizer."};
    /// When not empty, only parameters whose names start with this are loaded (the others keep their
    /// values; file tensors outside it count as unexpected unless allow_unexpected). E.g. "encoder." to
    /// start a classifier from a SimMIM checkpoint.
    std::string only_params_with_prefix;
};

/// Loads every parameter of the arena from `file`. Errors name the source and the tensor: missing,
/// unexpected (unless allowed), wrongly shaped, or not a floating-point dtype. Nothing is modified unless
/// every check passes.
template <class T>
void import_params(ParamArena<T>& arena, const TensorFile& file, const LoadOptions& opt = {}) {
    const std::string src = file.source.empty() ? std::string("<memory>") : file.source;
    std::set<std::string> expected;
    const auto selected = [&](const ParamInfo& p) { return p.name.starts_with(opt.only_params_with_prefix); };
    for (const auto& p : arena.params()) {
        if (!selected(p)) continue;
        const std::string name = opt.prefix + p.name;
        expected.insert(name);
        if (!file.contains(name)) throw SafetensorsError(src + ": missing tensor '" + name + "'");
        const TensorData& t = file.at(name);
        if (t.shape != p.shape)
            throw SafetensorsError(src + ": tensor '" + name + "' has shape " + detail::shape_string(t.shape) + ", expected " +
                                   detail::shape_string(p.shape));
        if (t.dtype != DType::F32 && t.dtype != DType::F64 && t.dtype != DType::F16 && t.dtype != DType::BF16)
            throw SafetensorsError(src + ": tensor '" + name + "' has dtype " + std::string(dtype_name(t.dtype)) +
                                   ", expected a floating-point dtype (F32, F64, F16 or BF16)");
    }
    if (!opt.allow_unexpected)
        for (const auto& n : file.names())
            if (!expected.count(n) && std::none_of(opt.ignore_prefixes.begin(), opt.ignore_prefixes.end(),
                                                   [&](const std::string& pre) { return n.starts_with(pre); }))
                throw SafetensorsError(src + ": unexpected tensor '" + n + "' (not a parameter of this model)");
    for (const auto& p : arena.params()) {
        if (!selected(p)) continue;
        const auto values = file.at(opt.prefix + p.name).template to<T>();
        std::copy(values.begin(), values.end(), arena.values() + p.offset);
    }
}

/// Writes the model's weights (F32, official names) with `metadata`, atomically.
template <class Model>
void save_weights(const Model& model, const std::filesystem::path& path, std::map<std::string, std::string> metadata = {}) {
    TensorFile file;
    file.metadata = std::move(metadata);
    export_params(file, model.params());
    write_safetensors(path, file);
}

/// Reads weights written by save_weights() or by PyTorch (model.state_dict()).
template <class Model>
void load_weights(Model& model, const std::filesystem::path& path, const LoadOptions& opt = {}) {
    import_params(model.params(), read_safetensors(path), opt);
}

}  // namespace simmim::io
