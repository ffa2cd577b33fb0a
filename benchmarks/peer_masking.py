#!/usr/bin/python3
"""numpy / PyTorch peer of benchmarks/bench_masking.cpp.

Cases (one JSON line each, median wall time after warmup):
  generate       the official MaskGenerator of microsoft/SimMIM in numpy (np.random.permutation, index
                 assignment, reshape, repeat on both axes), called once per sample for a batch of 128,
                 then np.stack, at (input, mask patch, model patch) = (192, 32, 4) and (224, 32, 16)
  blend          x * (1 - w) + mask_token * w at (B, L, D) = (128, 2304, 128), w = mask (B, L, 1)
  blend_cat_pos  the encoder's whole token assembly, what the C++ op computes:
                 cat(cls_token, blend) + pos_embed -> (B, L + 1, D)
  l1_loss_fwdbwd the SimMIM loss on (128, 3, 192, 192), model patch 4: mask upsampled with
                 repeat_interleave, sum(|x - x_rec| * mask_px) / (sum(mask_px) + 1e-5) / C, then backward
                 to x_rec (x_rec.grad reset to None each time)
Each case is checked against a direct numpy computation before timing.

    /usr/bin/python3 benchmarks/peer_masking.py [--threads T] [--repeats R] [--warmup W]
"""
import argparse
import json
import os
import statistics
import sys
import time

BATCH = 128
MASK_RATIO = 0.6


class MaskGenerator:
    """microsoft/SimMIM data/data_simmim.py MaskGenerator."""

    def __init__(self, input_size=192, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6):
        import numpy as np

        self.np = np
        self.rand_size = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.rand_size ** 2
        self.mask_count = int(np.ceil(self.token_count * mask_ratio))

    def __call__(self):
        np = self.np
        mask_idx = np.random.permutation(self.token_count)[:self.mask_count]
        mask = np.zeros(self.token_count, dtype=int)
        mask[mask_idx] = 1
        mask = mask.reshape((self.rand_size, self.rand_size))
        mask = mask.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        return mask


def median_ms(fn, warmup, repeats, min_seconds):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), len(times)


def check(condition, what):
    if not condition:
        sys.exit(f"peer_masking: validation failed: {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads and the default OPENBLAS_NUM_THREADS (default: os.cpu_count())")
    parser.add_argument("--repeats", type=int, default=10, help="minimum timed repeats per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repeats before timing")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="keep repeating until this much time passed")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))  # before torch is imported
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    common = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
              "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
              "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
              "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}

    def report(case, shape, fn):
        ms, n = median_ms(fn, args.warmup, args.repeats, args.min_seconds)
        print(json.dumps({"case": case, "shape": shape, "ms_median": round(ms, 4), "repeats": n, **common}),
              flush=True)

    for input_size, mask_patch, model_patch in ((192, 32, 4), (224, 32, 16)):
        generator = MaskGenerator(input_size, mask_patch, model_patch, MASK_RATIO)
        masks = np.stack([generator() for _ in range(BATCH)])
        scale = mask_patch // model_patch
        coarse = masks[:, ::scale, ::scale]
        check((coarse.reshape(BATCH, -1).sum(1) == generator.mask_count).all()
              and (masks == coarse.repeat(scale, 1).repeat(scale, 2)).all(), f"generate {input_size}/{mask_patch}")
        report("generate", [BATCH, input_size, mask_patch, model_patch],
               lambda: np.stack([generator() for _ in range(BATCH)]))

    B, L, D = BATCH, 2304, 128
    generator = MaskGenerator(192, 32, 4, MASK_RATIO)
    mask = torch.from_numpy(np.stack([generator() for _ in range(B)]))       # (B, 48, 48)
    x = torch.randn(B, L, D)                                                  # (B, L, D)
    mask_token, cls_token = torch.randn(1, 1, D), torch.randn(1, 1, D)
    pos_embed = torch.randn(1, L + 1, D)
    w = mask.flatten(1).unsqueeze(-1).type_as(x)                              # (B, L, 1)

    def blend():
        with torch.no_grad():
            return x * (1 - w) + mask_token.expand(B, L, -1) * w

    def blend_cat_pos():
        with torch.no_grad():
            return torch.cat((cls_token.expand(B, -1, -1), blend()), dim=1) + pos_embed

    wn = w.numpy()
    check(np.allclose(blend().numpy(), x.numpy() * (1 - wn) + mask_token.numpy() * wn, atol=1e-6), "blend")
    check(np.allclose(blend_cat_pos().numpy()[:, 1:], blend().numpy() + pos_embed.numpy()[:, 1:], atol=1e-6)
          and np.allclose(blend_cat_pos().numpy()[:, 0], cls_token.numpy()[0] + pos_embed.numpy()[0, :1], atol=1e-6),
          "blend_cat_pos")
    report("blend", [B, L, D], blend)
    report("blend_cat_pos", [B, L, D], blend_cat_pos)

    C, S, p = 3, 192, 4
    target = torch.randn(B, C, S, S)
    x_rec = torch.randn(B, C, S, S, requires_grad=True)

    def loss_fwdbwd():
        x_rec.grad = None
        mask_px = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).type_as(target)  # (B, 1, S, S)
        loss = (torch.abs(target - x_rec) * mask_px).sum() / (mask_px.sum() + 1e-5) / C
        loss.backward()
        return loss

    loss = float(loss_fwdbwd())
    mask_px = mask.numpy().repeat(p, 1).repeat(p, 2)[:, None].astype(np.float64)
    diff = x_rec.detach().numpy().astype(np.float64) - target.numpy()
    denominator = (mask_px.sum() + 1e-5) * C
    check(abs(loss - (np.abs(diff) * mask_px).sum() / denominator) <= 1e-5 * loss, "l1 loss value")
    check(np.abs(x_rec.grad.numpy() - np.sign(diff) * mask_px / denominator).max() <= 1e-6 / denominator,
          "l1 loss gradient")
    report("l1_loss_fwdbwd", [B, C, S, S, p], loss_fwdbwd)


if __name__ == "__main__":
    main()
