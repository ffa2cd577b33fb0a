// simmim/io/model_io.hpp: model weights <-> safetensors under the official state-dict names.
//
// A file written by save_weights() loads into the official PyTorch model with load_state_dict(strict=True)
// (all tensors F32 in PyTorch layouts), and a state dict saved from PyTorch loads here. load_weights() (through
// read_weights()) also reads files under Hugging Face transformers names (ViT/SwinForMaskedImageModeling,
// io/hf_names.hpp, docs/weights-names.md), converting them to the official names first.
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
#include "simmim/io/hf_names.hpp"
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

/// The model's constant buffers (Model::buffers(), e.g. Swin's relative_position_index and attn_mask), none
/// for a model without any.
template <class Model>
std::vector<ModelBuffer> model_buffers(const Model& model) {
    if constexpr (requires { model.buffers(); }) return model.buffers();
    else return {};
}

/// Adds the buffers to `file`: indices as I64, the others as F32 (F64 when `as_double`).
inline void export_buffers(TensorFile& file, const std::vector<ModelBuffer>& buffers, bool as_double = false) {
    for (const auto& b : buffers) {
        if (b.integer) {
            const std::vector<std::int64_t> v(b.values.begin(), b.values.end());
            file.set<std::int64_t>(b.name, std::span<const std::int64_t>(v), b.shape);
        } else if (as_double) {
            file.set<double>(b.name, std::span<const double>(b.values), b.shape);
        } else {
            const std::vector<float> v(b.values.begin(), b.values.end());
            file.set<float>(b.name, std::span<const float>(v), b.shape);
        }
    }
}

/// `file` without the model's buffers, after checking that each one the file holds equals the model's
/// (shape and every value: an index or attention mask of another window layout throws SafetensorsError
/// naming the tensor). A state dict of the official PyTorch model holds them; they are never loaded.
inline TensorFile checked_without_buffers(const TensorFile& file, const std::vector<ModelBuffer>& buffers) {
    if (buffers.empty()) return file;
    const std::string src = file.source.empty() ? std::string("<memory>") : file.source;
    std::set<std::string> names;
    for (const auto& b : buffers) {
        names.insert(b.name);
        if (!file.contains(b.name)) continue;
        const TensorData& t = file.at(b.name);
        if (t.shape != b.shape)
            throw SafetensorsError(src + ": buffer '" + b.name + "' has shape " + detail::shape_string(t.shape) + ", this model's is " +
                                   detail::shape_string(b.shape) + " (another window size or resolution)");
        const auto v = t.to<double>();
        for (std::size_t i = 0; i < v.size(); ++i)
            if (v[i] != b.values[i])
                throw SafetensorsError(src + ": buffer '" + b.name + "' differs from this model's at element " + std::to_string(i) +
                                       " (" + std::to_string(v[i]) + " in the file, " + std::to_string(b.values[i]) + " here)");
    }
    TensorFile out;
    out.source = file.source;
    out.metadata = file.metadata;
    for (const auto& n : file.names())
        if (!names.count(n)) out.set(n, file.at(n));
    return out;
}

/// Writes the model's weights (F32, official names) atomically, with its buffers (model_buffers, so that
/// PyTorch's load_state_dict(strict=True) accepts the file), `metadata` and what the model says it is
/// (model_metadata: encoder form and configuration, geometry, head, loss), so a reader can tell which
/// model the file holds (read_safetensors_metadata, AnyEncoder).
template <class Model>
void save_weights(const Model& model, const std::filesystem::path& path, std::map<std::string, std::string> metadata = {}) {
    TensorFile file;
    file.metadata = std::move(metadata);
    for (auto& [key, value] : model_metadata(model)) file.metadata[key] = value;
    export_params(file, model.params());
    export_buffers(file, model_buffers(model));
    write_safetensors(path, file);
}

/// read_safetensors(path), with a file under Hugging Face transformers names (detect_name_scheme() not
/// Official) converted to the official names (to_official_names: query/key/value merged into qkv; metadata
/// and dtypes kept). HF tensors without an official counterpart (a pooler, say) throw NameConversionError
/// naming them, unless `drop_unmapped`. An official file is returned as read.
inline TensorFile read_weights(const std::filesystem::path& path, bool drop_unmapped = false) {
    TensorFile file = read_safetensors(path);
    if (detect_name_scheme(file) == NameScheme::Official) return file;
    return to_official_names(file, NameConversionOptions{drop_unmapped});
}

/// Reads weights written by save_weights() or by PyTorch (model.state_dict()), or saved by transformers'
/// ViT/SwinForMaskedImageModeling (read_weights converts HF names; LoadOptions::allow_unexpected also lets HF
/// tensors without an official counterpart be left out). A file that records another model
/// (check_model_kind) is refused before any tensor is read into the model; files without that
/// record (PyTorch's, HF's, or written before it existed) load when their tensors match. The model's
/// buffers that the file holds are checked against the model's (checked_without_buffers), not loaded.
template <class Model>
void load_weights(Model& model, const std::filesystem::path& path, const LoadOptions& opt = {}) {
    const TensorFile file = read_weights(path, opt.allow_unexpected);
    check_model_kind(file.metadata, model, path.string());
    import_params(model.params(), checked_without_buffers(file, model_buffers(model)), opt);
}

}  // namespace simmim::io
