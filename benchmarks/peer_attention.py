#!/usr/bin/python3
"""PyTorch peer of benchmarks/bench_attention.cpp: the multi-head attention core on the same shapes.

q, k, v come from one (B, N, 3, H, Dh) tensor split like the ViT block (timm's Attention):
out = softmax(q @ k^T * Dh**-0.5) @ v, returned as (B, N, H*Dh). torch 1.13 has no
scaled_dot_product_attention, so this is the eager composition of matmul, softmax and matmul.
Modes: "fwd" (no autograd) and "fwdbwd" (forward with autograd, then the backward of sum(out * g)
for a fixed random g, i.e. out.backward(g); qkv.grad is reset to None before each repeat).
Prints one JSON line per (shape, mode) with the median wall time over the repeats, after warmup
(ms_median), and the median process CPU time summed over threads (cpu_ms_median: with --threads 1
it is insensitive to other load on the machine).

Run with the system interpreter that has torch 1.13:
    /usr/bin/python3 benchmarks/peer_attention.py [--threads T] [--repeats R] [--warmup W]
"""
import argparse
import json
import os
import statistics
import time

# (B, H, N, Dh), as in bench_attention.cpp.
SHAPES = [(8, 12, 197, 64), (64, 3, 65, 64), (1, 12, 1024, 64), (256, 4, 36, 32)]


def attention(qkv, heads):
    """qkv (B, N, 3*H*Dh) viewed as (B, N, 3, H, Dh) -> out (B, N, H*Dh)."""
    B, N, three_d = qkv.shape
    dh = three_d // (3 * heads)
    q, k, v = qkv.reshape(B, N, 3, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
    attn = (q @ k.transpose(-2, -1)) * dh**-0.5
    attn = attn.softmax(dim=-1)
    return (attn @ v).transpose(1, 2).reshape(B, N, heads * dh)


def medians_ms(fn, warmup, repeats, min_seconds):
    """Median wall time and median process CPU time (summed over threads) of fn, in ms."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < repeats or time.perf_counter() - start < min_seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu), len(wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads and the default OPENBLAS_NUM_THREADS (default: os.cpu_count())")
    parser.add_argument("--repeats", type=int, default=10, help="minimum timed repeats per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repeats before timing")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="keep repeating until this much time has passed")
    args = parser.parse_args()
    # The BLAS behind torch may keep its own thread pool (OpenBLAS pthreads ignores
    # torch.set_num_threads): give it the same count unless the caller set one. Must precede import.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    for B, H, N, Dh in SHAPES:
        D = H * Dh
        qkv = torch.randn(B, N, 3 * D, dtype=torch.float32)
        g = torch.randn(B, N, D, dtype=torch.float32)

        def forward():
            with torch.no_grad():
                attention(qkv, H)

        leaf = qkv.clone().requires_grad_(True)

        def forward_backward():
            leaf.grad = None
            attention(leaf, H).backward(g)

        for mode, fn in (("fwd", forward), ("fwdbwd", forward_backward)):
            ms, cpu_ms, n = medians_ms(fn, args.warmup, args.repeats, args.min_seconds)
            print(json.dumps({"shape": [B, H, N, Dh], "mode": mode, "ms_median": round(ms, 4),
                              "cpu_ms_median": round(cpu_ms, 4), "repeats": n,
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                              "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                              "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
                              "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}), flush=True)


if __name__ == "__main__":
    main()
