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
#include "simmim/model/model_kind.hpp"

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

namespace detail {

/// DataError-free check of a parameter-like tensor: present, of `shape`, of a floating-point dtype.
/// Throws SafetensorsError naming the source and the tensor otherwise.
inline const TensorData& checked_float_tensor(const TensorFile& file, const std::string& src, const std::string& name,
                                              const std::vector<std::int64_t>& shape, const char* kind = "tensor") {
    if (!file.contains(name)) throw SafetensorsError(src + ": missing " + kind + " '" + name + "'");
    const TensorData& t = file.at(name);
    if (t.shape != shape)
        throw SafetensorsError(src + ": " + kind + " '" + name + "' has shape " + shape_string(t.shape) + ", expected " +
                               shape_string(shape));
    if (t.dtype != DType::F32 && t.dtype != DType::F64 && t.dtype != DType::F16 && t.dtype != DType::BF16)
        throw SafetensorsError(src + ": " + kind + " '" + name + "' has dtype " + std::string(dtype_name(t.dtype)) +
                               ", expected a floating-point dtype (F32, F64, F16 or BF16)");
    return t;
}

/// What import_params() would leave in the arena: its current values with every selected parameter
/// replaced by the file's (converted to T), after every check. Modifies nothing.
template <class T>
std::vector<T> staged_params(const ParamArena<T>& arena, const TensorFile& file, const LoadOptions& opt) {
    const std::string src = file.source.empty() ? std::string("<memory>") : file.source;
    std::set<std::string> expected;
    const auto selected = [&](const ParamInfo& p) { return p.name.starts_with(opt.only_params_with_prefix); };
    for (const auto& p : arena.params()) {
        if (!selected(p)) continue;
        const std::string name = opt.prefix + p.name;
        expected.insert(name);
        (void)checked_float_tensor(file, src, name, p.shape);
    }
    if (!opt.allow_unexpected)
        for (const auto& n : file.names())
            if (!expected.count(n) && std::none_of(opt.ignore_prefixes.begin(), opt.ignore_prefixes.end(),
                                                   [&](const std::string& pre) { return n.starts_with(pre); }))
                throw SafetensorsError(src + ": unexpected tensor '" + n + "' (not a parameter of this model)");
    std::vector<T> staged(arena.values(), arena.values() + arena.size());
    for (const auto& p : arena.params()) {
        if (!selected(p)) continue;
        const auto values = file.at(opt.prefix + p.name).template to<T>();
        std::copy(values.begin(), values.end(), staged.begin() + static_cast<std::ptrdiff_t>(p.offset));
    }
    return staged;
}

}  // namespace detail

/// Loads every parameter of the arena from `file`. Errors name the source and the tensor: missing,
/// unexpected (unless allowed), wrongly shaped, or not a floating-point dtype. Nothing is modified unless
/// every check passes.
template <class T>
void import_params(ParamArena<T>& arena, const TensorFile& file, const LoadOptions& opt = {}) {
    const std::vector<T> staged = detail::staged_params(arena, file, opt);
    std::copy(staged.begin(), staged.end(), arena.values());
}

/// The metadata that says which model `model` is (model/model_kind.hpp), empty for a model that cannot say.
template <class Model>
std::map<std::string, std::string> model_metadata(const Model& model) {
    if constexpr (requires { model.metadata(); }) return model.metadata();
    else return {};
}

/// SafetensorsError naming `source` and every difference when a file's metadata records another model
/// than `model` (model_kind_difference); nothing for files that do not record one.
template <class Model>
void check_model_kind(const std::map<std::string, std::string>& file_metadata, const Model& model, const std::string& source) {
    const std::string diff = model_kind_difference(file_metadata, model_metadata(model));
    if (!diff.empty()) throw SafetensorsError(source + " holds another model: " + diff);
}

/// Writes the model's weights (F32, official names) atomically, with `metadata` and what the model says it
/// is (model_metadata: encoder form and configuration, geometry, head, loss), so a reader can tell which
/// model the file holds (read_safetensors_metadata, AnyEncoder).
template <class Model>
void save_weights(const Model& model, const std::filesystem::path& path, std::map<std::string, std::string> metadata = {}) {
    TensorFile file;
    file.metadata = std::move(metadata);
    for (auto& [key, value] : model_metadata(model)) file.metadata[key] = value;
    export_params(file, model.params());
    write_safetensors(path, file);
}

/// Reads weights written by save_weights() or by PyTorch (model.state_dict()). A file that records another
/// model (check_model_kind) is refused before any tensor is read into the model; files without that
/// record (PyTorch's, or written before it existed) load when their tensors match.
template <class Model>
void load_weights(Model& model, const std::filesystem::path& path, const LoadOptions& opt = {}) {
    const TensorFile file = read_safetensors(path);
    check_model_kind(file.metadata, model, path.string());
    import_params(model.params(), file, opt);
}

}  // namespace simmim::io
