#!/usr/bin/python3
"""PyTorch peer of benchmarks/bench_train_step.cpp: one whole SimMIM training step in torch 1.13.

The step: optimizer.zero_grad(set_to_none=True), loss = SimMIM(images, mask) (tests/pytorch/
simmim_reference.py: timm-style ViT, 1x1 conv + PixelShuffle head, masked L1), loss.backward(),
clip_grad_norm_(5.0), AdamW.step() with the two SimMIM parameter groups (weight decay 0.05 on
ndim > 1 except pos_embed / cls_token / mask_token), float32, lr 5e-4. Presets and batches as the
C++ benchmark: vit-t4-32 (64), vit-t16-224 (16), vit-s16-224 (8); images ~ N(0, 1), masks from the
official MaskGenerator (numpy), one fixed batch. The Swin presets swin-d32 (64) and swin-b-192 (4) use
tests/pytorch/swin_reference.py (the official SwinTransformerForSimMIM, decoder sized by the input
channels) with the official init and parameter groups (bias tables decayed, as the official pretraining).
--amp bf16 runs the forward under torch.autocast("cpu", dtype=torch.bfloat16), as a PyTorch user adds
mixed precision on a CPU with AVX512-BF16 (the loss and the update stay FP32).

Validation before timing: three steps on the fixed batch; every loss finite and the last below the
first, else exit 1. Then --warmup untimed steps and at least --repeats timed ones (median wall time).
Each preset runs in its own process (the script re-runs itself with --preset), so peak_rss_MB
(getrusage ru_maxrss) is per preset. One JSON line per preset.

Run with the system interpreter that has torch 1.13:
    /usr/bin/python3 benchmarks/peer_train_step.py [--threads T] [--preset NAME] [--repeats R] [--warmup W]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# name: (img_size, in_chans, patch_size, embed_dim, depth, num_heads, mlp_ratio, mask_patch, batch)
PRESETS = {
    "vit-t4-32": (32, 3, 4, 192, 12, 3, 4, 8, 64),
    "vit-t16-224": (224, 3, 16, 192, 12, 3, 4, 32, 16),
    "vit-s16-224": (224, 3, 16, 384, 12, 6, 4, 32, 8),
    "vit-b16-224": (224, 3, 16, 768, 12, 12, 4, 32, 8),
}
# name: (img_size, in_chans, patch_size, window_size, embed_dim, depths, num_heads, mask_patch, batch)
SWIN_PRESETS = {
    "swin-d32": (32, 3, 2, 4, 48, [2, 2, 6], [3, 6, 12], 8, 64),
    "swin-b-192": (192, 3, 4, 6, 128, [2, 2, 18, 2], [4, 8, 16, 32], 32, 4),
}
MASK_RATIO = 0.6
CLIP_GRAD = 5.0
LEARNING_RATE = 5e-4
VALIDATION_STEPS = 3


def official_masks(rng, batch, input_size, mask_patch, model_patch):
    """microsoft/SimMIM MaskGenerator.__call__ for each sample: (batch, h, w) int, 1 = masked."""
    import numpy as np

    rand_size = input_size // mask_patch
    scale = mask_patch // model_patch
    token_count = rand_size ** 2
    mask_count = int(np.ceil(token_count * MASK_RATIO))
    masks = []
    for _ in range(batch):
        mask_idx = rng.permutation(token_count)[:mask_count]
        mask = np.zeros(token_count, dtype=int)
        mask[mask_idx] = 1
        mask = mask.reshape((rand_size, rand_size))
        masks.append(mask.repeat(scale, axis=0).repeat(scale, axis=1))
    return np.stack(masks)


def run_preset(name, args):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
    import numpy as np
    import torch
    from simmim_reference import SimMIM, ViTConfig, adamw_param_groups

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if name in SWIN_PRESETS:
        import swin_reference as sr
        img, chans, patch, window, dim, depths, heads, mask_patch, batch = SWIN_PRESETS[name]
        model = sr.SimMIM(sr.SwinConfig(img_size=img, in_chans=chans, patch_size=patch, window_size=window, embed_dim=dim,
                                        depths=depths, num_heads=heads))
        model.official_init()
        no_decay = set(sr.no_weight_decay_names(model))
        groups = [{"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": 0.05},
                  {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0}]
    else:
        img, chans, patch, dim, depth, heads, mlp, mask_patch, batch = PRESETS[name]
        model = SimMIM(ViTConfig(img_size=img, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth,
                                 num_heads=heads, mlp_ratio=mlp))
        from peer_pretrain import init_model  # the C++ model's init, shared with the pretraining peer
        init_model(model)
        groups = adamw_param_groups(model, 0.05)
    model.train()
    params = list(model.parameters())
    lr = 1e-4 if name in ("swin-b-192", "vit-b16-224") else LEARNING_RATE  # as bench_train_step.cpp: 5e-4 does not descend in 3 steps
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    amp = args.amp == "bf16"
    if amp:  # torch 1.13's CPU autocast hands LayerNorm a bf16 input with FP32 parameters and fails; compute it in FP32
        import torch.nn.functional as F
        torch.nn.LayerNorm.forward = lambda self, x: F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
    images = torch.randn(batch, chans, img, img, dtype=torch.float32)
    mask = torch.from_numpy(official_masks(np.random.default_rng(7), batch, img, mask_patch, patch))

    def step():
        optimizer.zero_grad(set_to_none=True)
        if amp:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, _ = model(images, mask)
            loss = loss.float()
        else:
            loss, _ = model(images, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        optimizer.step()
        return float(loss)

    losses = [step() for _ in range(VALIDATION_STEPS)]
    if not all(map(lambda v: v == v and abs(v) != float("inf"), losses)) or not losses[-1] < losses[0]:
        sys.exit(f"peer_train_step: {name}: the loss over {VALIDATION_STEPS} steps on a fixed batch is not finite "
                 f"and decreasing: {losses}")
    for _ in range(args.warmup):
        step()
    times = []
    start = time.perf_counter()
    while len(times) < args.repeats or time.perf_counter() - start < args.min_seconds:
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    print(json.dumps({"preset": name, "amp": args.amp, "batch": batch, "ms_median": round(ms, 3),
                      "images_per_s": round(batch / ms * 1e3, 3), "repeats": len(times),
                      "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "loss_first": losses[0], "loss_last": losses[-1],
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                      "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                      "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
                      "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads and the default OPENBLAS_NUM_THREADS (default: os.cpu_count())")
    parser.add_argument("--preset", choices=sorted(PRESETS) + sorted(SWIN_PRESETS), help="run only this preset, in this process")
    parser.add_argument("--presets", default=",".join(PRESETS),
                        help="comma-separated presets to run, one process each (default: the ViT presets)")
    parser.add_argument("--amp", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: forward under torch.autocast('cpu', dtype=torch.bfloat16)")
    parser.add_argument("--repeats", type=int, default=3, help="minimum timed steps")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed steps after the validation steps (which already warm up)")
    parser.add_argument("--min-seconds", type=float, default=0.0, help="keep timing steps until this much time passed")
    args = parser.parse_args()
    if args.preset is None:  # one process per preset, so that the peak RSS is the preset's own
        status = 0
        for name in args.presets.split(","):
            command = [sys.executable, os.path.abspath(__file__), "--preset", name, "--threads", str(args.threads),
                       "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                       "--min-seconds", str(args.min_seconds), "--amp", args.amp]
            status = max(status, subprocess.call(command))
        sys.exit(status)
    # OpenBLAS keeps its own thread pool (it ignores torch.set_num_threads): give it the same count
    # unless the caller set one. Must precede the import of torch.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    run_preset(args.preset, args)


if __name__ == "__main__":
    main()
