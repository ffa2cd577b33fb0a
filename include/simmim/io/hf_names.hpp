// simmim/io/hf_names.hpp: tensor names of the official microsoft/SimMIM state dicts (simmim's own parameter
// names) <-> the names of Hugging Face transformers' ViTForMaskedImageModeling and SwinForMaskedImageModeling.
//
//   NameScheme detect_name_scheme(file)          which naming a file uses (Official, HFViT, HFSwin)
//   TensorFile to_official_names(file)           HF names -> official names (query/key/value merged into qkv);
//                                                official files pass through unchanged
//   TensorFile to_hf_names(file, HFViT|HFSwin)   official names -> HF names (qkv split into query/key/value)
//
// The tables (docs/weights-names.md lists them side by side) were written from transformers'
// models/vit/modeling_vit.py, models/swin/modeling_swin.py and models/swin/convert_swin_simmim_to_pytorch.py.
// Values are never changed: renamed tensors are copied byte for byte, qkv is split into (and merged from)
// its three row blocks [0, D), [D, 2D), [2D, 3D) (query, key, value), dtypes and the file's metadata are
// kept, so official -> HF -> official is bit-identical (apart from the attn_mask buffers, below).
//
// What does not move, and what happens to it:
//   - Official Swin `encoder.layers.{i}.blocks.{j}.attn_mask` buffers are dropped going to HF (HF computes the
//     shifted-window mask in forward) and so are absent coming back (simmim and PyTorch rebuild them).
//   - Official-form (BEiT-derived) ViT tensors - the layer scales gamma_1/gamma_2, the separate
//     attn.q_bias/attn.v_bias and the relative position bias tables/indices - have no place in HF's
//     ViTForMaskedImageModeling: to_hf_names throws NameConversionError naming every one of them.
//   - Absolute position embeddings of Swin: official `encoder.absolute_pos_embed` is (1, L, C), HF's
//     `swin.embeddings.position_embeddings` is (1, L + 1, C): refused both ways (SimMIM never uses them, APE=False).
//   - Any other tensor without a counterpart (an HF `pooler.*` or `classifier.*`, a second decoder layer
//     `decoder.2.*`, `optimizer.*` moments, SwinV2 tensors, ...) is "unmapped": by default the conversion
//     throws NameConversionError listing all of them; with NameConversionOptions::drop_unmapped they are left
//     out and convert_names() reports them in NameConversion::dropped.
// Going to HF, a "format": "pt" metadata entry is added when the file has no "format" (transformers refuses
// a safetensors file whose metadata lacks it); the other metadata entries are kept as they are.
//
// Besides the ForMaskedImageModeling names ("vit." / "swin." in front), to_official_names also reads the
// bare base-model form that ViTModel / SwinModel checkpoints use ("embeddings.", "encoder.layer." ...);
// to_hf_names always writes the ForMaskedImageModeling form.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "simmim/io/safetensors.hpp"

namespace simmim::io {

/// Which naming a weights file uses.
enum class NameScheme {
    Official,  // microsoft/SimMIM state-dict names (simmim's parameter names): encoder.*, decoder.*
    HFViT,     // transformers ViTForMaskedImageModeling: vit.*, decoder.0.*
    HFSwin,    // transformers SwinForMaskedImageModeling: swin.*, decoder.0.*
};

/// "official", "hf-vit", "hf-swin".
constexpr std::string_view name_scheme_name(NameScheme scheme) noexcept {
    switch (scheme) {
        case NameScheme::Official: return "official";
        case NameScheme::HFViT: return "hf-vit";
        case NameScheme::HFSwin: return "hf-swin";
    }
    return "invalid";
}

/// Every failure of a name conversion: tensors HF cannot hold, unmapped tensors, incomplete or misshapen
/// query/key/value groups, files mixing namings. A SafetensorsError, so callers of load_weights catch it.
class NameConversionError : public SafetensorsError {
public:
    using SafetensorsError::SafetensorsError;
};

struct NameConversionOptions {
    /// Tensors with no counterpart in the target naming: false (the default) throws NameConversionError
    /// listing all of them; true leaves them out (convert_names reports them in NameConversion::dropped).
    /// Tensors refused on purpose (official-form ViT parameters, Swin absolute position embeddings) and
    /// incomplete query/key/value groups throw either way.
    bool drop_unmapped = false;
};

/// What convert_names() produced.
struct NameConversion {
    TensorFile file;
    NameScheme from = NameScheme::Official;  // the naming detected in the input
    std::vector<std::string> dropped;        // input names left out: attn_mask buffers, and unmapped tensors when allowed
};

namespace detail::hf {

enum class RuleKind {
    Rename,    // one tensor <-> one tensor
    SplitQKV,  // official qkv.{weight,bias} <-> HF {query,key,value}.{weight,bias}
    DropToHF,  // official buffer HF has no counterpart for and does not need (Swin attn_mask)
};

/// One row of a name table. Placeholders, each a whole dot-separated segment: {i} and {j} a decimal index,
/// {w} "weight" or "bias", {p} (HF side of SplitQKV) "query", "key" or "value".
struct Rule {
    std::string_view official;
    std::string_view hf;  // without the model prefix ("vit." / "swin.") when prefixed
    RuleKind kind = RuleKind::Rename;
    bool prefixed = true;  // false: decoder.0.*, named the same at the top level of both
};

// transformers models/vit/modeling_vit.py: ViTForMaskedImageModeling.vit = ViTModel(add_pooling_layer=False,
// use_mask_token=True): embeddings (ViTEmbeddings: cls_token, mask_token, position_embeddings,
// patch_embeddings.projection), encoder.layer[i] (ViTLayer: layernorm_before, attention.attention.{query,key,
// value}, attention.output.dense, layernorm_after, intermediate.dense, output.dense), layernorm;
// decoder = Sequential(Conv2d, PixelShuffle).
inline constexpr std::array<Rule, 12> kViTRules{{
    {"encoder.cls_token", "embeddings.cls_token"},
    {"encoder.mask_token", "embeddings.mask_token"},
    {"encoder.pos_embed", "embeddings.position_embeddings"},
    {"encoder.patch_embed.proj.{w}", "embeddings.patch_embeddings.projection.{w}"},
    {"encoder.blocks.{i}.norm1.{w}", "encoder.layer.{i}.layernorm_before.{w}"},
    {"encoder.blocks.{i}.attn.qkv.{w}", "encoder.layer.{i}.attention.attention.{p}.{w}", RuleKind::SplitQKV},
    {"encoder.blocks.{i}.attn.proj.{w}", "encoder.layer.{i}.attention.output.dense.{w}"},
    {"encoder.blocks.{i}.norm2.{w}", "encoder.layer.{i}.layernorm_after.{w}"},
    {"encoder.blocks.{i}.mlp.fc1.{w}", "encoder.layer.{i}.intermediate.dense.{w}"},
    {"encoder.blocks.{i}.mlp.fc2.{w}", "encoder.layer.{i}.output.dense.{w}"},
    {"encoder.norm.{w}", "layernorm.{w}"},
    {"decoder.0.{w}", "decoder.0.{w}", RuleKind::Rename, false},
}};

// transformers models/swin/modeling_swin.py (SwinForMaskedImageModeling.swin = SwinModel(add_pooling_layer=False,
// use_mask_token=True)) and models/swin/convert_swin_simmim_to_pytorch.py (rename_key, convert_state_dict).
inline constexpr std::array<Rule, 16> kSwinRules{{
    {"encoder.mask_token", "embeddings.mask_token"},
    {"encoder.patch_embed.proj.{w}", "embeddings.patch_embeddings.projection.{w}"},
    {"encoder.patch_embed.norm.{w}", "embeddings.norm.{w}"},
    {"encoder.layers.{i}.blocks.{j}.norm1.{w}", "encoder.layers.{i}.blocks.{j}.layernorm_before.{w}"},
    {"encoder.layers.{i}.blocks.{j}.attn.relative_position_bias_table",
     "encoder.layers.{i}.blocks.{j}.attention.self.relative_position_bias_table"},
    {"encoder.layers.{i}.blocks.{j}.attn.relative_position_index",
     "encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index"},
    {"encoder.layers.{i}.blocks.{j}.attn.qkv.{w}", "encoder.layers.{i}.blocks.{j}.attention.self.{p}.{w}", RuleKind::SplitQKV},
    {"encoder.layers.{i}.blocks.{j}.attn.proj.{w}", "encoder.layers.{i}.blocks.{j}.attention.output.dense.{w}"},
    {"encoder.layers.{i}.blocks.{j}.norm2.{w}", "encoder.layers.{i}.blocks.{j}.layernorm_after.{w}"},
    {"encoder.layers.{i}.blocks.{j}.mlp.fc1.{w}", "encoder.layers.{i}.blocks.{j}.intermediate.dense.{w}"},
    {"encoder.layers.{i}.blocks.{j}.mlp.fc2.{w}", "encoder.layers.{i}.blocks.{j}.output.dense.{w}"},
    {"encoder.layers.{i}.blocks.{j}.attn_mask", "", RuleKind::DropToHF},
    {"encoder.layers.{i}.downsample.norm.{w}", "encoder.layers.{i}.downsample.norm.{w}"},
    {"encoder.layers.{i}.downsample.reduction.weight", "encoder.layers.{i}.downsample.reduction.weight"},
    {"encoder.norm.{w}", "layernorm.{w}"},
    {"decoder.0.{w}", "decoder.0.{w}", RuleKind::Rename, false},
}};

// Official-form (BEiT-derived) ViT tensors HF ViTForMaskedImageModeling cannot hold (microsoft/SimMIM
// models/vision_transformer.py: Block.gamma_1/gamma_2, Attention.q_bias/v_bias, RelativePositionBias).
inline constexpr std::array<std::string_view, 8> kOfficialViTOnly{{
    "encoder.blocks.{i}.gamma_1",
    "encoder.blocks.{i}.gamma_2",
    "encoder.blocks.{i}.attn.q_bias",
    "encoder.blocks.{i}.attn.v_bias",
    "encoder.blocks.{i}.attn.relative_position_bias_table",
    "encoder.blocks.{i}.attn.relative_position_index",
    "encoder.rel_pos_bias.relative_position_bias_table",
    "encoder.rel_pos_bias.relative_position_index",
}};

/// Captured placeholder values of a match.
struct Captures {
    std::string i, j, w, p;
    std::string* slot(std::string_view placeholder) {
        if (placeholder == "{i}") return &i;
        if (placeholder == "{j}") return &j;
        if (placeholder == "{w}") return &w;
        if (placeholder == "{p}") return &p;
        return nullptr;
    }
};

inline std::vector<std::string_view> split_dots(std::string_view text) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        const std::size_t dot = text.find('.', start);
        parts.push_back(text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
        if (dot == std::string_view::npos) return parts;
        start = dot + 1;
    }
}

/// A decimal index as PyTorch writes one: "0", or digits without a leading zero.
inline bool is_index(std::string_view s) {
    if (s.empty() || s.size() > 9 || (s.size() > 1 && s[0] == '0')) return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Whether `name` has the shape of `pattern`; fills `captures` when it does.
inline bool match(std::string_view pattern, std::string_view name, Captures& captures) {
    const auto want = split_dots(pattern);
    const auto have = split_dots(name);
    if (want.size() != have.size()) return false;
    Captures got;
    for (std::size_t k = 0; k < want.size(); ++k) {
        const std::string_view w = want[k], h = have[k];
        if (std::string* slot = got.slot(w)) {
            const bool ok = (w == "{i}" || w == "{j}") ? is_index(h)
                            : w == "{w}"               ? (h == "weight" || h == "bias")
                                                       : (h == "query" || h == "key" || h == "value");
            if (!ok) return false;
            *slot = std::string(h);
        } else if (w != h) {
            return false;
        }
    }
    captures = std::move(got);
    return true;
}

/// `pattern` with its placeholders replaced by `captures`.
inline std::string fill(std::string_view pattern, Captures captures) {
    std::string out;
    for (const std::string_view part : split_dots(pattern)) {
        if (!out.empty()) out += '.';
        if (const std::string* slot = captures.slot(part)) out += *slot;
        else out += part;
    }
    return out;
}

inline std::span<const Rule> rules_for(NameScheme scheme) {
    if (scheme == NameScheme::HFViT) return kViTRules;
    return kSwinRules;
}

inline std::string model_prefix(NameScheme scheme) { return scheme == NameScheme::HFViT ? "vit." : "swin."; }

inline std::string hf_class(NameScheme scheme) {
    return scheme == NameScheme::HFViT ? "ViTForMaskedImageModeling" : "SwinForMaskedImageModeling";
}

/// "'a', 'b', 'c'", at most `limit` names, then "and N more".
inline std::string name_list(const std::vector<std::string>& names, std::size_t limit = 12) {
    std::string out;
    for (std::size_t k = 0; k < names.size() && k < limit; ++k) out += (k ? ", '" : "'") + names[k] + "'";
    if (names.size() > limit) out += " and " + std::to_string(names.size() - limit) + " more";
    return out;
}

inline std::string where(const TensorFile& file) { return io::detail::source_label(file.source); }

inline bool any_starts_with(const TensorFile& file, std::string_view prefix) {
    return std::any_of(file.names().begin(), file.names().end(), [&](const std::string& n) { return n.starts_with(prefix); });
}

/// The HF naming of `file` and the model prefix its names carry ("vit.", "swin." or "" for the bare
/// base-model form), or nullopt for an official file. Throws NameConversionError for a file that mixes namings.
struct HFForm {
    NameScheme scheme;
    std::string prefix;
};
inline std::optional<HFForm> detect_hf(const TensorFile& file) {
    const bool vit = any_starts_with(file, "vit."), swin = any_starts_with(file, "swin.");
    // the bare ViTModel / SwinModel form: official names never start with "embeddings." or "layernorm."
    const bool bare = any_starts_with(file, "embeddings.") || file.contains("layernorm.weight");
    const bool bare_vit = bare && (file.contains("embeddings.cls_token") || any_starts_with(file, "encoder.layer."));
    const bool bare_swin = bare && (file.contains("embeddings.norm.weight") || any_starts_with(file, "encoder.layers."));
    const int kinds = int(vit) + int(swin) + int(bare);
    const auto example = [&](std::string_view prefix) {
        for (const auto& n : file.names())
            if (n.starts_with(prefix)) return "'" + n + "'";
        return std::string();
    };
    const std::string bare_example = any_starts_with(file, "embeddings.") ? example("embeddings.") : "'layernorm.weight'";
    if (bare && kinds == 1 && !bare_vit && !bare_swin)
        throw NameConversionError(where(file) + ": has HF base-model names (" + bare_example +
                                  ") but neither ViT ('embeddings.cls_token', 'encoder.layer.*') nor Swin ('embeddings.norm.*', "
                                  "'encoder.layers.*') ones: cannot tell which model it holds");
    if (kinds > 1 || (bare && bare_vit && bare_swin))
        throw NameConversionError(where(file) + ": mixes tensor namings (" +
                                  (vit ? "HF ViT " + example("vit.") + " " : std::string()) +
                                  (swin ? "HF Swin " + example("swin.") + " " : std::string()) +
                                  (bare ? "HF base-model " + bare_example + " " : std::string()) +
                                  "): cannot tell how to convert it");
    if (vit || swin) {
        // a ForMaskedImageModeling file has only "vit."/"swin." and "decoder." names: official ones mean a mix
        for (const auto& n : file.names())
            if (n.starts_with("encoder."))
                throw NameConversionError(where(file) + ": mixes HF names (" + example(vit ? "vit." : "swin.") +
                                          ") with official names ('" + n + "'): cannot tell how to convert it");
        return HFForm{vit ? NameScheme::HFViT : NameScheme::HFSwin, vit ? "vit." : "swin."};
    }
    if (bare) return HFForm{bare_vit ? NameScheme::HFViT : NameScheme::HFSwin, ""};
    return std::nullopt;
}

/// Bytes per row of a tensor whose first dimension counts rows.
inline std::size_t row_bytes(const TensorData& t) {
    std::size_t bytes = dtype_size(t.dtype);
    for (std::size_t k = 1; k < t.shape.size(); ++k) bytes *= static_cast<std::size_t>(t.shape[k]);
    return bytes;
}

/// Splits official qkv.{weight,bias} `t` (named `name`) into its query, key and value row blocks.
inline std::array<TensorData, 3> split_qkv(const TensorFile& file, const std::string& name, const TensorData& t, bool is_weight) {
    const std::size_t rank = is_weight ? 2 : 1;
    if (t.shape.size() != rank)
        throw NameConversionError(where(file) + ": tensor '" + name + "' has shape " + io::detail::shape_string(t.shape) +
                                  ", expected " + (is_weight ? "(3D, D)" : "(3D)") + " to split into query, key and value");
    if (t.shape[0] % 3 != 0)
        throw NameConversionError(where(file) + ": tensor '" + name + "' has shape " + io::detail::shape_string(t.shape) + ": its " +
                                  std::to_string(t.shape[0]) + " rows are not divisible by 3 (query, key, value)");
    const std::int64_t rows = t.shape[0] / 3;
    const std::size_t block = static_cast<std::size_t>(rows) * row_bytes(t);
    std::array<TensorData, 3> parts;
    for (std::size_t k = 0; k < 3; ++k) {
        parts[k].dtype = t.dtype;
        parts[k].shape = t.shape;
        parts[k].shape[0] = rows;
        const auto begin = t.bytes.begin() + static_cast<std::ptrdiff_t>(k * block);
        parts[k].bytes.assign(begin, begin + static_cast<std::ptrdiff_t>(block));
    }
    return parts;
}

/// Stacks query, key and value (named `names`) into the official qkv tensor `target`.
inline TensorData merge_qkv(const TensorFile& file, const std::string& target, const std::array<std::string, 3>& names, bool is_weight) {
    const TensorData& q = file.at(names[0]);
    for (std::size_t k = 0; k < 3; ++k) {
        const TensorData& t = file.at(names[k]);
        if (t.shape.size() != (is_weight ? 2u : 1u))
            throw NameConversionError(where(file) + ": tensor '" + names[k] + "' has shape " + io::detail::shape_string(t.shape) +
                                      ", expected " + (is_weight ? "(D, D)" : "(D)") + " to stack into '" + target + "'");
        if (t.shape != q.shape)
            throw NameConversionError(where(file) + ": cannot stack into '" + target + "': '" + names[k] + "' has shape " +
                                      io::detail::shape_string(t.shape) + " but '" + names[0] + "' has " +
                                      io::detail::shape_string(q.shape));
        if (t.dtype != q.dtype)
            throw NameConversionError(where(file) + ": cannot stack into '" + target + "': '" + names[k] + "' is " +
                                      std::string(dtype_name(t.dtype)) + " but '" + names[0] + "' is " +
                                      std::string(dtype_name(q.dtype)));
    }
    TensorData out;
    out.dtype = q.dtype;
    out.shape = q.shape;
    out.shape[0] *= 3;
    out.bytes.reserve(3 * q.bytes.size());
    for (const auto& n : names) {
        const auto& bytes = file.at(n).bytes;
        out.bytes.insert(out.bytes.end(), bytes.begin(), bytes.end());
    }
    return out;
}

inline void put(TensorFile& out, const TensorFile& in, const std::string& name, TensorData tensor, const std::string& from) {
    if (out.contains(name))
        throw NameConversionError(where(in) + ": two tensors map to '" + name + "' (the second is '" + from + "')");
    out.set(name, std::move(tensor));
}

inline std::string other_architecture_hint(const TensorFile& file, NameScheme target) {
    if (target == NameScheme::HFSwin && any_starts_with(file, "encoder.blocks."))
        return " (the file holds a ViT, encoder.blocks.*: convert it to NameScheme::HFViT)";
    if (target == NameScheme::HFViT && any_starts_with(file, "encoder.layers."))
        return " (the file holds a Swin, encoder.layers.*: convert it to NameScheme::HFSwin)";
    return "";
}

/// HF names -> official names.
inline NameConversion from_hf(const TensorFile& file, const HFForm& form, const NameConversionOptions& opt) {
    NameConversion result;
    result.from = form.scheme;
    result.file.metadata = file.metadata;
    result.file.source = file.source;
    const auto rules = rules_for(form.scheme);

    if (form.scheme == NameScheme::HFSwin) {
        const std::string ape = form.prefix + "embeddings.position_embeddings";
        if (file.contains(ape))
            throw NameConversionError(where(file) + ": tensor '" + ape + "' (HF Swin absolute position embeddings, shape " +
                                      io::detail::shape_string(file.at(ape).shape) +
                                      ") has no official counterpart: HF's has L + 1 rows, official encoder.absolute_pos_embed has L");
    }

    // pass 1: find each HF name's rule; gather query/key/value groups under their official qkv name
    struct Group {
        std::array<std::string, 3> names;  // query, key, value (empty when absent)
        bool is_weight = true;
    };
    std::map<std::string, Group> groups;
    std::vector<std::pair<const Rule*, Captures>> matched(file.names().size(), {nullptr, {}});
    std::vector<std::string> unmapped;
    for (std::size_t n = 0; n < file.names().size(); ++n) {
        const std::string& name = file.names()[n];
        for (const Rule& rule : rules) {
            if (rule.kind == RuleKind::DropToHF) continue;
            const std::string_view local = std::string_view(name);
            std::string_view rest = local;
            if (rule.prefixed) {
                if (!local.starts_with(form.prefix)) continue;
                rest = local.substr(form.prefix.size());
            }
            Captures c;
            if (!match(rule.hf, rest, c)) continue;
            matched[n] = {&rule, c};
            if (rule.kind == RuleKind::SplitQKV) {
                Group& g = groups[fill(rule.official, c)];
                g.is_weight = c.w == "weight";
                g.names[c.p == "query" ? 0 : c.p == "key" ? 1 : 2] = name;
            }
            break;
        }
        if (!matched[n].first) unmapped.push_back(name);
    }
    if (!unmapped.empty() && !opt.drop_unmapped)
        throw NameConversionError(where(file) + ": " + std::to_string(unmapped.size()) + " tensor(s) of the HF " +
                                  hf_class(form.scheme) + " naming have no official SimMIM counterpart: " + name_list(unmapped) +
                                  " (NameConversionOptions::drop_unmapped leaves them out)");

    // every group complete, with the names it would have had
    for (auto& [target, g] : groups) {
        std::vector<std::string> missing, present;
        for (std::size_t k = 0; k < 3; ++k) (g.names[k].empty() ? missing : present).push_back(g.names[k]);
        if (missing.empty()) continue;
        // the absent names: the present one with its {query,key,value} segment replaced
        static constexpr std::array<std::string_view, 3> kParts{"query", "key", "value"};
        const std::string& any = present.front();
        std::string base;
        for (std::string_view part : kParts)
            if (const auto at = any.rfind("." + std::string(part) + "."); at != std::string::npos) {
                base = any.substr(0, at + 1) + "{}" + any.substr(at + 1 + part.size());
                break;
            }
        std::vector<std::string> absent;
        for (std::size_t k = 0; k < 3; ++k)
            if (g.names[k].empty()) {
                std::string n = base;
                n.replace(n.find("{}"), 2, kParts[k]);
                absent.push_back(n);
            }
        throw NameConversionError(where(file) + ": cannot assemble '" + target + "': missing " + name_list(absent) +
                                  " (present: " + name_list(present) + ")");
    }

    // pass 2: emit in the input's order; a qkv tensor goes where the first of its three parts was
    std::vector<std::string> emitted_groups;
    for (std::size_t n = 0; n < file.names().size(); ++n) {
        const std::string& name = file.names()[n];
        const auto& [rule, c] = matched[n];
        if (!rule) {
            result.dropped.push_back(name);
            continue;
        }
        const std::string target = fill(rule->official, c);
        if (rule->kind == RuleKind::SplitQKV) {
            if (std::find(emitted_groups.begin(), emitted_groups.end(), target) != emitted_groups.end()) continue;
            emitted_groups.push_back(target);
            const Group& g = groups.at(target);
            put(result.file, file, target, merge_qkv(file, target, g.names, g.is_weight), name);
        } else {
            put(result.file, file, target, file.at(name), name);
        }
    }
    // a stacked bias must match its weight's rows
    for (const auto& [target, g] : groups) {
        if (g.is_weight) continue;
        const std::string weight = target.substr(0, target.size() - 4) + "weight";
        if (result.file.contains(weight) && result.file.at(weight).shape[0] != result.file.at(target).shape[0])
            throw NameConversionError(where(file) + ": query/key/value biases stack to " +
                                      io::detail::shape_string(result.file.at(target).shape) + " but their weights to " +
                                      io::detail::shape_string(result.file.at(weight).shape) + " ('" + target + "')");
    }
    return result;
}

/// Official names -> HF names of `target`.
inline NameConversion to_hf(const TensorFile& file, NameScheme target, const NameConversionOptions& opt) {
    NameConversion result;
    result.from = NameScheme::Official;
    result.file.metadata = file.metadata;
    result.file.metadata.try_emplace("format", "pt");
    result.file.source = file.source;

    // refusals first: HF cannot hold these, and dropping them would change the model
    std::vector<std::string> refused;
    for (const auto& name : file.names()) {
        Captures c;
        if (std::any_of(kOfficialViTOnly.begin(), kOfficialViTOnly.end(), [&](std::string_view p) { return match(p, name, c); }))
            refused.push_back(name);
    }
    if (!refused.empty())
        throw NameConversionError(
            where(file) + ": holds an official-form (BEiT-derived) ViT, which HF " + hf_class(target) +
            " cannot hold: it has no place for the layer scales gamma_1/gamma_2, the separate q_bias/v_bias (HF's key has a bias "
            "where BEiT's has none) or the relative position bias; " + std::to_string(refused.size()) + " such tensor(s): " +
            name_list(refused) + ". Only the common (timm-form) ViT converts to HF names");
    if (target == NameScheme::HFSwin && file.contains("encoder.absolute_pos_embed"))
        throw NameConversionError(where(file) + ": tensor 'encoder.absolute_pos_embed' (Swin absolute position embeddings, shape " +
                                  io::detail::shape_string(file.at("encoder.absolute_pos_embed").shape) +
                                  ") has no HF counterpart: HF's swin.embeddings.position_embeddings has L + 1 rows, the official one L");

    const std::string prefix = model_prefix(target);
    std::vector<std::string> unmapped;
    std::vector<std::pair<std::string, std::pair<const Rule*, Captures>>> plan;
    for (const auto& name : file.names()) {
        const Rule* found = nullptr;
        Captures c;
        for (const Rule& rule : rules_for(target))
            if (match(rule.official, name, c)) {
                found = &rule;
                break;
            }
        if (!found) unmapped.push_back(name);
        plan.push_back({name, {found, c}});
    }
    if (!unmapped.empty() && !opt.drop_unmapped)
        throw NameConversionError(where(file) + ": " + std::to_string(unmapped.size()) + " tensor(s) have no place in HF " +
                                  hf_class(target) + other_architecture_hint(file, target) + ": " + name_list(unmapped) +
                                  " (NameConversionOptions::drop_unmapped leaves them out)");

    for (const auto& [name, how] : plan) {
        const auto& [rule, c] = how;
        if (!rule || rule->kind == RuleKind::DropToHF) {
            result.dropped.push_back(name);
            continue;
        }
        const std::string base = rule->prefixed ? prefix : std::string();
        if (rule->kind == RuleKind::SplitQKV) {
            auto parts = split_qkv(file, name, file.at(name), c.w == "weight");
            static constexpr std::array<const char*, 3> kParts{"query", "key", "value"};
            for (std::size_t k = 0; k < 3; ++k) {
                Captures with_part = c;
                with_part.p = kParts[k];
                put(result.file, file, base + fill(rule->hf, with_part), std::move(parts[k]), name);
            }
        } else {
            put(result.file, file, base + fill(rule->hf, c), file.at(name), name);
        }
    }
    return result;
}

}  // namespace detail::hf

/// The naming `file` uses: HFViT when its names start with "vit." (or are ViTModel's bare "embeddings." /
/// "encoder.layer." names), HFSwin for "swin." (or SwinModel's bare names), Official otherwise (an empty file
/// included). Throws NameConversionError for a file mixing namings.
inline NameScheme detect_name_scheme(const TensorFile& file) {
    const auto hf = detail::hf::detect_hf(file);
    return hf ? hf->scheme : NameScheme::Official;
}

/// Converts `file` to `target` naming. An HF file is first brought to official names; official names are then
/// renamed to `target`'s. A file already named as `target` comes back unchanged (an HF base-model file gains
/// the ForMaskedImageModeling prefix). See the top of this header for what is dropped and what throws.
inline NameConversion convert_names(const TensorFile& file, NameScheme target, const NameConversionOptions& opt = {}) {
    const auto hf = detail::hf::detect_hf(file);
    if (hf && hf->scheme == target && !hf->prefix.empty()) return NameConversion{file, target, {}};
    NameConversion official = hf ? detail::hf::from_hf(file, *hf, opt) : NameConversion{file, NameScheme::Official, {}};
    if (target == NameScheme::Official) return official;
    NameConversion out = detail::hf::to_hf(official.file, target, opt);
    out.from = official.from;
    out.dropped.insert(out.dropped.begin(), official.dropped.begin(), official.dropped.end());
    return out;
}

/// `file` under the official SimMIM names (HF query/key/value merged into qkv); an official file unchanged.
inline TensorFile to_official_names(const TensorFile& file, const NameConversionOptions& opt = {}) {
    return convert_names(file, NameScheme::Official, opt).file;
}

/// `file` under HF names: `target` is NameScheme::HFViT (ViTForMaskedImageModeling, common-form ViT only) or
/// NameScheme::HFSwin (SwinForMaskedImageModeling; attn_mask buffers dropped). std::invalid_argument for Official.
inline TensorFile to_hf_names(const TensorFile& file, NameScheme target, const NameConversionOptions& opt = {}) {
    if (target == NameScheme::Official)
        throw std::invalid_argument("to_hf_names: the target must be NameScheme::HFViT or NameScheme::HFSwin (use to_official_names)");
    return convert_names(file, target, opt).file;
}

}  // namespace simmim::io
