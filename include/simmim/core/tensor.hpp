// simmim/core/tensor.hpp: compile-time shapes, batched activation tensors and the parameter arena.
//
// Shapes of parameters and per-sample activations are template arguments (`Shape<N, D>`), so the
// compiler knows every extent; only the batch size is a run-time value. Storage is flat and
// row-major, llm.c style: one arena for all parameter values and one for their gradients.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"

namespace simmim {

/// Allocator whose blocks start on a 64-byte boundary (a cache line, an AVX-512 register). Every
/// buffer the kernels reduce over uses it: vectorised reductions (Eigen's included) peel a head that
/// depends on the address modulo the vector width, so a fixed alignment is what makes sums
/// bit-identical from one process to the next.
namespace detail {
/// Bytes currently held by AlignedAllocator blocks in this process (see aligned_bytes_in_use()).
inline std::atomic<std::int64_t> g_aligned_bytes_in_use{0};
}  // namespace detail

/// Bytes currently allocated through AlignedAllocator, i.e. by every AlignedVector and BatchTensor: the
/// parameter arena, the activations and the kernels' scratch. A test compares a model's activation_bytes(B)
/// with what a forward and backward really allocate.
inline std::int64_t aligned_bytes_in_use() noexcept { return detail::g_aligned_bytes_in_use.load(std::memory_order_relaxed); }

template <class T, std::size_t Alignment = 64>
struct AlignedAllocator {
    using value_type = T;
    template <class U>
    struct rebind {
        using other = AlignedAllocator<U, Alignment>;
    };
    AlignedAllocator() noexcept = default;
    template <class U>
    AlignedAllocator(const AlignedAllocator<U, Alignment>&) noexcept {}
    T* allocate(std::size_t n) {
        if (n == 0) return nullptr;
        T* p = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{Alignment}));
        detail::g_aligned_bytes_in_use.fetch_add(static_cast<std::int64_t>(n * sizeof(T)), std::memory_order_relaxed);
        return p;
    }
    void deallocate(T* p, std::size_t n) noexcept {
        if (!p) return;
        detail::g_aligned_bytes_in_use.fetch_sub(static_cast<std::int64_t>(n * sizeof(T)), std::memory_order_relaxed);
        ::operator delete(p, std::align_val_t{Alignment});
    }
    template <class U>
    bool operator==(const AlignedAllocator<U, Alignment>&) const noexcept { return true; }
};

/// A std::vector on 64-byte aligned storage.
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

/// A compile-time shape (row-major extents).
template <std::size_t... Extents>
struct Shape {
    static constexpr std::size_t rank = sizeof...(Extents);
    static constexpr std::size_t numel = (std::size_t{1} * ... * Extents);
    static constexpr std::array<std::size_t, rank> dims{Extents...};
    static std::vector<std::int64_t> as_vector() { return {static_cast<std::int64_t>(Extents)...}; }
};

/// A batch of per-sample tensors of shape S: (batch, S...), contiguous, owning its storage.
template <class T, class S>
class BatchTensor {
public:
    using value_type = T;
    using sample_shape = S;
    static constexpr std::size_t sample_bytes = S::numel * sizeof(T);  // bytes per sample
    BatchTensor() = default;
    explicit BatchTensor(std::size_t batch) { resize(batch); }
    void resize(std::size_t batch) {
        batch_ = batch;
        data_.resize(batch * S::numel);
    }
    std::size_t batch() const noexcept { return batch_; }
    std::size_t size() const noexcept { return data_.size(); }
    T* data() noexcept { return data_.data(); }
    const T* data() const noexcept { return data_.data(); }
    T* sample(std::size_t b) noexcept { return data_.data() + b * S::numel; }
    const T* sample(std::size_t b) const noexcept { return data_.data() + b * S::numel; }
    T& operator[](std::size_t i) noexcept { return data_[i]; }
    const T& operator[](std::size_t i) const noexcept { return data_[i]; }
    AlignedVector<T>& storage() noexcept { return data_; }
    const AlignedVector<T>& storage() const noexcept { return data_; }

private:
    std::size_t batch_ = 0;
    AlignedVector<T> data_;
};

/// Bytes per sample of a group of activation buffers that lists them with for_each(f) (each a BatchTensor):
/// how activation_bytes(B) is computed from the same list that resize(B) walks, so the two cannot drift.
template <class Buffers>
std::size_t bytes_per_sample() {
    Buffers buffers;
    std::size_t n = 0;
    buffers.for_each([&](auto& t) { n += std::remove_reference_t<decltype(t)>::sample_bytes; });
    return n;
}

/// How a parameter is initialised (see ParamArena::initialize).
///   TruncNormal002: normal(0, 0.02) truncated at +-2 (absolute; timm's trunc_normal_ defaults)
///   TruncNormalStd: normal(0, 0.02) truncated at +-0.02, one standard deviation (BEiT / official SimMIM ViT)
///   Zeros, Ones:    constants 0 and 1
///   Constant:       ParamInfo::init_value (e.g. layer scale 0.1)
///   Uniform:        uniform in [-init_value, init_value) (PyTorch's default Conv2d / Linear init: bound
///                   1 / sqrt(fan_in) for the weight, kaiming_uniform_ with a = sqrt(5), and the bias)
/// After drawing, every value is multiplied by ParamInfo::init_scale (e.g. 1 / sqrt(2 layer_id)).
enum class Init { TruncNormal002, Zeros, Ones, TruncNormalStd, Constant, Uniform };

/// Where a named parameter lives in the arena, with its PyTorch shape.
struct ParamInfo {
    std::string name;
    std::vector<std::int64_t> shape;
    std::size_t offset = 0;
    std::size_t size = 0;
    Init init = Init::Zeros;
    bool weight_decay = false;  // official groups: no decay on 1-D tensors, biases, tokens, pos embed
    double init_value = 0.0;    // the value of Init::Constant
    double init_scale = 1.0;    // multiplies the initial values (after drawing)
};

/// A constant tensor a model computes from its configuration (PyTorch's register_buffer), such as Swin's
/// relative_position_index and attn_mask: written beside the parameters so PyTorch's strict load accepts the
/// file, and checked (not loaded) when a file holds it.
struct ModelBuffer {
    std::string name;
    std::vector<std::int64_t> shape;
    std::vector<double> values;  // exact: small integers or -100 / 0
    bool integer = false;        // stored as I64 (an index), else as the parameters' floating-point type
};

template <class T>
class ParamArena;

/// A typed handle on one parameter of compile-time shape S (valid once the arena is allocated).
template <class T, class S>
class Param {
public:
    using shape = S;
    Param() = default;
    Param(ParamArena<T>* arena, std::size_t offset) : arena_(arena), offset_(offset) {}
    T* data() const noexcept;
    T* grad() const noexcept;
    static constexpr std::size_t numel = S::numel;

private:
    ParamArena<T>* arena_ = nullptr;
    std::size_t offset_ = 0;
};

/// Flat storage for every parameter value and gradient of a model. Layers register their
/// parameters (name, shape, init, decay) while the model is constructed; then `allocate()`.
template <class T>
class ParamArena {
public:
    ParamArena() = default;
    ParamArena(const ParamArena&) = delete;  // Param handles point at their arena
    ParamArena& operator=(const ParamArena&) = delete;

    /// Registers a parameter; `init_value` is used by Init::Constant, `init_scale` multiplies the
    /// drawn initial values.
    template <class S>
    Param<T, S> add(std::string name, Init init, bool weight_decay, double init_value = 0.0, double init_scale = 1.0) {
        if (allocated_) throw std::logic_error("ParamArena: add('" + name + "') after allocate()");
        ParamInfo info{std::move(name), S::as_vector(), total_, S::numel, init, weight_decay, init_value, init_scale};
        total_ += S::numel;
        infos_.push_back(std::move(info));
        return Param<T, S>(this, infos_.back().offset);
    }
    /// Allocates the values (zero) and, unless `with_gradients` is false, the gradients. An arena of an
    /// inference-only model (model/any_encoder.hpp) skips the gradients: it then has no grads() (null),
    /// and nothing may call Param::grad(), backward() or an optimizer on it.
    void allocate(bool with_gradients = true) {
        values_.assign(total_, T(0));
        if (with_gradients) grads_.assign(total_, T(0));
        else AlignedVector<T>().swap(grads_);
        allocated_ = true;
        has_gradients_ = with_gradients;
    }
    bool allocated() const noexcept { return allocated_; }
    bool has_gradients() const noexcept { return has_gradients_; }
    std::size_t size() const noexcept { return total_; }
    const std::vector<ParamInfo>& params() const noexcept { return infos_; }
    const ParamInfo* find(const std::string& name) const {
        for (const auto& p : infos_)
            if (p.name == name) return &p;
        return nullptr;
    }
    T* values() noexcept { return values_.data(); }
    const T* values() const noexcept { return values_.data(); }
    /// The gradients, parallel to values(); null unless allocated with gradients.
    T* grads() noexcept { return has_gradients_ ? grads_.data() : nullptr; }
    const T* grads() const noexcept { return has_gradients_ ? grads_.data() : nullptr; }
    void zero_grad() { std::fill(grads_.begin(), grads_.end(), T(0)); }

    /// Initialises every value from its ParamInfo and zeroes the gradients. Parameter k draws from
    /// Rng(derive_seed(seed, k)): reproducible and independent of the thread count.
    void initialize(std::uint64_t seed) {
        if (!allocated_) throw std::logic_error("ParamArena: initialize() before allocate()");
        for (std::size_t k = 0; k < infos_.size(); ++k) {
            const ParamInfo& p = infos_[k];
            T* v = values_.data() + p.offset;
            Rng rng(derive_seed(seed, k));
            for (std::size_t i = 0; i < p.size; ++i) {
                double x = 0;
                switch (p.init) {
                    case Init::TruncNormal002: x = rng.truncated_normal(0.02, -2.0, 2.0); break;
                    case Init::TruncNormalStd: x = rng.truncated_normal(0.02, -0.02, 0.02); break;
                    case Init::Zeros: x = 0; break;
                    case Init::Ones: x = 1; break;
                    case Init::Constant: x = p.init_value; break;
                    case Init::Uniform: x = rng.uniform(-p.init_value, p.init_value); break;
                }
                v[i] = T(x * p.init_scale);
            }
        }
        zero_grad();
    }

    // ---- gradient groups: when a backward pass makes gradients final (dist/mpi.hpp overlaps its allreduce) ----
    /// The parameters [first, end) (indices into params()) whose gradients a backward pass makes final
    /// together, before the backward has ended: a transformer block's (model/parts/block_stack.hpp
    /// registers one group per block). Groups are registered in parameter order and their gradients become
    /// final in the reverse order; parameters in no group are final only when backward() returns.
    struct GradGroup {
        std::size_t first = 0, end = 0;
    };
    /// Registers the group [first, end) (must follow the previous group); returns its index.
    std::size_t add_grad_group(std::size_t first, std::size_t end) {
        if (first > end || end > infos_.size() || (!groups_.empty() && first < groups_.back().end))
            throw std::logic_error("ParamArena: gradient group [" + std::to_string(first) + ", " + std::to_string(end) +
                                   ") out of order or out of range");
        groups_.push_back({first, end});
        return groups_.size() - 1;
    }
    const std::vector<GradGroup>& grad_groups() const noexcept { return groups_; }
    /// `hook(group)` is called, on the thread that runs backward, as soon as the gradients of that group are
    /// final; an empty function removes it.
    void set_grad_ready_hook(std::function<void(std::size_t)> hook) { grad_ready_ = std::move(hook); }
    /// Called by the part that owns `group` when its gradients are final.
    void notify_grad_ready(std::size_t group) const {
        if (grad_ready_) grad_ready_(group);
    }

private:
    std::vector<ParamInfo> infos_;
    std::vector<GradGroup> groups_;
    std::function<void(std::size_t)> grad_ready_;
    AlignedVector<T> values_, grads_;
    std::size_t total_ = 0;
    bool allocated_ = false;
    bool has_gradients_ = false;
};

template <class T, class S>
T* Param<T, S>::data() const noexcept { return arena_->values() + offset_; }
template <class T, class S>
T* Param<T, S>::grad() const noexcept { return arena_->grads() + offset_; }

}  // namespace simmim
