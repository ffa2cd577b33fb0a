#!/usr/bin/env python3
"""benchmarks/scaling_model.py: the on-paper scaling of data-parallel simmim_pretrain (docs/distributed.md).

From a parameter count and a measured step time on this machine it estimates, per step of a global batch
(the paper's 2048) spread over N nodes of 64 cores with one rank per node:
  compute   the per-node batch times the core-seconds per image measured here, over 64 cores (linear scaling
            inside a node assumed: an optimistic bound, not measured on 64 cores)
  bytes     what each rank sends in a ring allreduce of the FP32 (or bf16) gradients: 2 (N - 1) / N x 4 x params
  comm      bytes / link bandwidth + latency x 2 (N - 1) messages x buckets
  efficiency = compute / (compute + exposed), with two bounds for the exposed communication:
            overlapped  comm beyond the backward pass (2/3 of compute) only: every bucket but the last starts
                        during backward, as measured here, and MPI progresses them as fast as the link allows
            serial      all of comm: MPI progresses a non-blocking collective only inside MPI calls, which
                        the reducer makes at every block boundary (one poll per block); a ring of 2 (N - 1)
                        rounds per bucket then mostly finishes in the wait after backward
Usage: python3 benchmarks/scaling_model.py   (the inputs are the constants below, from benchmarks/distributed.sh)
"""

MODELS = {
    # name: (parameters as simmim_pretrain counts them, images, seconds per step on 2 cores, 1 process x 2 threads)
    "vit-b16-224": (86_390_016, 8, 4.291),
    "swin-b-192": (89_874_104, 4, 1.660),
}
LINKS = {"25 Gb/s Ethernet": (25e9 / 8, 30e-6), "100 Gb/s InfiniBand": (100e9 / 8, 3e-6)}  # bytes/s, latency per message
CORES_HERE, CORES_PER_NODE, GLOBAL_BATCH = 2, 64, 2048


def row(params, core_s_per_image, nodes, link, bucket_mb=4.0, grad_bytes=4, per_node_batch=None):
    bandwidth, latency = LINKS[link]
    batch = per_node_batch or GLOBAL_BATCH // nodes
    compute = batch * core_s_per_image / CORES_PER_NODE
    sent = 2 * (nodes - 1) / nodes * grad_bytes * params
    buckets = max(1, round(grad_bytes * params / (bucket_mb * 1e6)))
    comm = sent / bandwidth + latency * 2 * (nodes - 1) * buckets
    overlapped = compute / (compute + max(0.0, comm - 2 / 3 * compute))
    serial = compute / (compute + comm)
    return batch, compute, sent, comm, overlapped, serial


def main():
    for name, (params, images, seconds) in MODELS.items():
        core_s = seconds * CORES_HERE / images
        print(f"\n{name}: {params / 1e6:.1f} M parameters, {core_s:.2f} core-seconds per image here "
              f"({CORES_PER_NODE / core_s:.0f} images/s per {CORES_PER_NODE}-core node if it scaled linearly)")
        print("| nodes | link | per-node batch | compute (s) | MB sent per rank | comm, 4 MB FP32 buckets (s) | efficiency overlapped / serial | 25 MB buckets | 25 MB, bf16 gradients |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for nodes in (8, 32, 128):
            for link in LINKS:
                batch, compute, sent, comm, over, ser = row(params, core_s, nodes, link)
                _, _, _, _, over25, ser25 = row(params, core_s, nodes, link, bucket_mb=25)
                _, _, _, _, over25h, ser25h = row(params, core_s, nodes, link, bucket_mb=25, grad_bytes=2)
                print(f"| {nodes} | {link} | {batch} | {compute:.3f} | {sent / 1e6:.0f} | {comm:.3f} | {100 * over:.0f}% / {100 * ser:.0f}% "
                      f"| {100 * over25:.0f}% / {100 * ser25:.0f}% | {100 * over25h:.0f}% / {100 * ser25h:.0f}% |")

if __name__ == "__main__":
    main()
