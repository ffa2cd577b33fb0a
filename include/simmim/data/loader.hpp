// simmim/data/loader.hpp: background batch loader with deterministic, resumable batches.
//
// Batch s (for any step s >= 0) is a pure function of (seed, s):
//   epoch e = s / steps_per_epoch, position p = s % steps_per_epoch (the last partial batch of
//   every epoch is dropped); the order of epoch e is a Fisher-Yates shuffle of 0..N-1 driven by
//   Rng(derive_seed(seed, 1, e)); sample j of the batch is dataset index order[p * B + j],
//   augmented with Rng(derive_seed(seed, 2, s, j)).
// So resuming at first_step = k yields exactly the batches an uninterrupted run would have seen,
// whatever the prefetch depth or worker count.
//
// A data-parallel run (dist/mpi.hpp) gives each process a SampleSlice of every batch: samples
// first .. first + count - 1 of the batch above, with the same dataset indices and augmentation draws
// (sample j is still order[p * B + j] with Rng(derive_seed(seed, 2, s, j))), so the processes' slices
// together are exactly the batch one process would load, as PyTorch's DistributedSampler does.
//
// Threads: `workers` background threads each build whole batches, at most `prefetch` steps ahead
// of the consumer (so workers beyond prefetch stay idle). next() is meant for one consumer thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/data/augment.hpp"
#include "simmim/data/dataset.hpp"

namespace simmim::data {

struct Batch {
    std::int64_t step = 0;
    std::int64_t epoch = 0;
    int batch_size = 0, channels = 0, size = 0;
    std::vector<float> images;          // (B, C, S, S)
    std::vector<int> labels;            // (B), -1 for unlabeled samples
    std::vector<std::int64_t> indices;  // (B) dataset indices
};

/// Which samples of every batch a loader builds: [first, first + count) of the batch; count 0 is all of them.
struct SampleSlice {
    int first = 0, count = 0;
};

namespace detail {

/// The sample order of one epoch: Fisher-Yates over 0..n-1 with Rng(derive_seed(seed, 1, epoch)).
inline std::vector<std::int64_t> epoch_order(std::size_t n, std::uint64_t seed, std::int64_t epoch) {
    std::vector<std::int64_t> order(n);
    std::iota(order.begin(), order.end(), std::int64_t{0});
    Rng rng(derive_seed(seed, 1, static_cast<std::uint64_t>(epoch)));
    for (std::size_t i = n; i > 1; --i) {
        const std::size_t k = static_cast<std::size_t>(rng.below(i));  // uniform in [0, i - 1]
        std::swap(order[i - 1], order[k]);
    }
    return order;
}

}  // namespace detail

class BatchLoader {
public:
    /// Starts the worker threads. DataError if dataset is null, batch_size < 1, the dataset holds
    /// fewer than batch_size images, first_step < 0, prefetch < 1, workers < 1, cfg is invalid, or the
    /// slice is not within the batch. batch_size is the whole batch; the batches hold slice.count samples
    /// (batch_size when slice.count is 0).
    BatchLoader(std::shared_ptr<const Dataset> dataset, AugmentConfig cfg, int batch_size, std::uint64_t seed,
                std::int64_t first_step = 0, int prefetch = 4, int workers = 1, SampleSlice slice = {})
        : dataset_(std::move(dataset)), cfg_(std::move(cfg)), batch_size_(batch_size), seed_(seed), prefetch_(prefetch),
          next_claim_(first_step), next_deliver_(first_step) {
        slice_first_ = slice.first;
        slice_count_ = slice.count == 0 ? batch_size : slice.count;
        if (slice.first < 0 || slice.count < 0 || slice.first + slice_count_ > batch_size)
            throw DataError("BatchLoader: sample slice [" + std::to_string(slice.first) + ", " + std::to_string(slice.first + slice_count_) +
                            ") is not within the batch of " + std::to_string(batch_size));
        if (!dataset_) throw DataError("BatchLoader: dataset is null");
        if (batch_size < 1) throw DataError("BatchLoader: batch_size must be >= 1, found " + std::to_string(batch_size));
        if (dataset_->size() < static_cast<std::size_t>(batch_size))
            throw DataError("BatchLoader: " + dataset_->description() + " holds fewer images than one batch of " +
                            std::to_string(batch_size));
        if (first_step < 0) throw DataError("BatchLoader: first_step must be >= 0, found " + std::to_string(first_step));
        if (prefetch < 1) throw DataError("BatchLoader: prefetch must be >= 1, found " + std::to_string(prefetch));
        if (workers < 1) throw DataError("BatchLoader: workers must be >= 1, found " + std::to_string(workers));
        detail::check_config(cfg_);
        steps_per_epoch_ = static_cast<std::int64_t>(dataset_->size() / static_cast<std::size_t>(batch_size));
        try {
            for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { worker_loop(); });
        } catch (...) {
            stop_and_join();
            throw;
        }
    }

    BatchLoader(const BatchLoader&) = delete;
    BatchLoader& operator=(const BatchLoader&) = delete;

    /// Stops and joins the workers; a worker finishes at most the sample it is augmenting.
    ~BatchLoader() { stop_and_join(); }

    /// The batch of the next step (first_step, first_step + 1, ...). Blocks until it is ready.
    /// An exception thrown while building it (e.g. a DataError from Dataset::get) is re-thrown
    /// here, and again on every later call: the loader cannot skip a step.
    Batch next() {
        std::unique_lock lock(mutex_);
        ready_cv_.wait(lock, [&] { return done_.count(next_deliver_) != 0; });
        auto found = done_.find(next_deliver_);
        if (auto* error = std::get_if<std::exception_ptr>(&found->second)) std::rethrow_exception(*error);
        Batch batch = std::move(std::get<Batch>(found->second));
        done_.erase(found);
        ++next_deliver_;
        lock.unlock();
        space_cv_.notify_all();
        return batch;
    }

    /// floor(N / batch_size): the last partial batch of each epoch is dropped.
    std::int64_t steps_per_epoch() const { return steps_per_epoch_; }

private:
    void worker_loop() {
        for (;;) {
            std::int64_t step = 0;
            {
                std::unique_lock lock(mutex_);
                space_cv_.wait(lock, [&] { return stop_ || (!failed_ && next_claim_ < next_deliver_ + prefetch_); });
                if (stop_) return;
                step = next_claim_++;
            }
            std::variant<Batch, std::exception_ptr> result;
            try {
                result = build(step);
            } catch (...) {
                result = std::current_exception();
            }
            {
                std::lock_guard lock(mutex_);
                if (std::holds_alternative<std::exception_ptr>(result)) failed_ = true;  // claim no further steps
                done_.emplace(step, std::move(result));
            }
            ready_cv_.notify_all();
        }
    }

    Batch build(std::int64_t step) {
        const std::int64_t epoch = step / steps_per_epoch_;
        const std::int64_t position = step % steps_per_epoch_;
        const std::shared_ptr<const std::vector<std::int64_t>> order = order_of(epoch);
        const int C = cfg_.out_channels, S = cfg_.out_size;
        const std::size_t sample_floats = static_cast<std::size_t>(C) * static_cast<std::size_t>(S) * static_cast<std::size_t>(S);
        Batch batch;
        batch.step = step;
        batch.epoch = epoch;
        batch.batch_size = slice_count_;
        batch.channels = C;
        batch.size = S;
        batch.images.resize(static_cast<std::size_t>(slice_count_) * sample_floats);  // (B, C, S, S)
        batch.labels.resize(static_cast<std::size_t>(slice_count_));
        batch.indices.resize(static_cast<std::size_t>(slice_count_));
        for (int j = slice_first_; j < slice_first_ + slice_count_; ++j) {
            if (stop_flag_.load(std::memory_order_relaxed)) break;  // the destructor is waiting; nobody reads this batch
            const std::size_t slot = static_cast<std::size_t>(j - slice_first_);
            const std::int64_t index = (*order)[static_cast<std::size_t>(position * batch_size_ + j)];
            const RawImage image = dataset_->get(static_cast<std::size_t>(index));
            Rng rng(derive_seed(seed_, 2, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(j)));
            augment(image, cfg_, rng, batch.images.data() + slot * sample_floats);
            batch.labels[slot] = image.label;
            batch.indices[slot] = index;
        }
        return batch;
    }

    /// The order of `epoch`, computed once and shared; the two most recent epochs are kept.
    std::shared_ptr<const std::vector<std::int64_t>> order_of(std::int64_t epoch) {
        std::lock_guard lock(order_mutex_);
        for (const auto& [e, order] : orders_)
            if (e == epoch) return order;
        auto order = std::make_shared<const std::vector<std::int64_t>>(detail::epoch_order(dataset_->size(), seed_, epoch));
        orders_.emplace_back(epoch, order);
        if (orders_.size() > 2) orders_.erase(std::min_element(orders_.begin(), orders_.end()));
        return order;
    }

    void stop_and_join() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        stop_flag_.store(true);
        space_cv_.notify_all();
        for (auto& thread : threads_)
            if (thread.joinable()) thread.join();
    }

    std::shared_ptr<const Dataset> dataset_;
    AugmentConfig cfg_;
    int batch_size_;
    int slice_first_ = 0, slice_count_ = 0;  // the samples of each batch this loader builds
    std::uint64_t seed_;
    std::int64_t prefetch_;
    std::int64_t steps_per_epoch_ = 0;

    std::mutex mutex_;                      // guards everything below up to done_
    std::condition_variable space_cv_;      // workers wait for room ahead of the consumer
    std::condition_variable ready_cv_;      // the consumer waits for its step
    std::int64_t next_claim_, next_deliver_;
    bool stop_ = false, failed_ = false;
    std::map<std::int64_t, std::variant<Batch, std::exception_ptr>> done_;  // finished steps not yet delivered
    std::atomic<bool> stop_flag_{false};    // lock-free copy of stop_ for the sample loop

    std::mutex order_mutex_;
    std::vector<std::pair<std::int64_t, std::shared_ptr<const std::vector<std::int64_t>>>> orders_;

    std::vector<std::thread> threads_;
};

}  // namespace simmim::data
