#!/usr/bin/python3
"""PyTorch peer of examples/simmim_pretrain.cpp: SimMIM pretraining of vit-t4-32-c1 on Fashion-MNIST.

Same model, data pipeline, masks, loss, optimiser, schedule and metrics file as the C++ binary, so
the two loss curves can be compared (benchmarks/plot_curves.py). The data order and random draws
are not the C++ ones (only their distributions are the same), so curves agree statistically, not
bit for bit.

- Model: tests/pytorch/simmim_reference.py (SimMIM, common timm ViT): image 32, 1 channel, patch 4,
  dim 192, depth 12, heads 3, MLP 4x; init trunc normal std 0.02 (cut at +-2) for Linear / Conv
  weights, cls / mask tokens and pos_embed, zero biases, LayerNorm 1 / 0 (as the C++ model).
- Data: train-images-idx3-ubyte(.gz) from --data; 28x28 -> /255 -> centred on a 32x32 zero canvas
  -> RandomResizedCrop (torchvision sampling: scale 0.67-1, ratio 3/4-4/3, 10 attempts then the
  central fallback; bilinear, align_corners=False, no antialias) -> horizontal flip p=0.5 ->
  normalise with the Fashion-MNIST statistics (MNIST's if the path names mnist but not fashion,
  as the C++ loader does). A fresh permutation per epoch; the last partial batch is dropped.
- Masks: the official MaskGenerator: 4x4 grid of 8x8 mask patches, ceil(16 * 0.6) = 10 masked per
  sample (uniform without replacement), upsampled x2 to the 8x8 token grid.
- AdamW (0.9, 0.999, eps 1e-8), weight decay on ndim > 1 except pos_embed / cls / mask tokens;
  clip_grad_norm_(5.0) every step; per-step lr: linear warmup from warmup_lr, then cosine to
  min_lr over the whole run (timm CosineLRScheduler), all lrs per batch 512 scaled by batch / 512.
- Every draw is a pure function of (seed, stream, index): torch.manual_seed(seed) for the init,
  numpy SeedSequence([seed, stream, epoch or step]) for epoch orders, crops / flips and masks.

Outputs in --out: metrics.jsonl (one JSON object per logged step: step, epoch, loss, lr,
grad_norm, images_per_s; the same keys as the C++ binary) and summary.json.

Run with the system interpreter (torch 1.13, numpy):
    /usr/bin/python3 benchmarks/peer_pretrain.py --steps 2000 --out runs/peer
"""
import argparse
import gzip
import json
import math
import os
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from simmim_reference import SimMIM, ViTConfig, adamw_param_groups  # noqa: E402

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"

# The vit-t4-32-c1 preset (include/simmim/core/config.hpp).
MODEL = ViTConfig(img_size=32, patch_size=4, in_chans=1, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4)
MASK_PATCH = 8
MASK_RATIO = 0.6

# Augmentation (include/simmim/data/augment.hpp).
SCALE = (0.67, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
FASHION_MNIST_NORM = (0.2860, 0.3530)
MNIST_NORM = (0.1307, 0.3081)

# Independent random streams, each seeded by (seed, stream, index).
STREAM_EPOCH_ORDER, STREAM_AUGMENT, STREAM_MASK = 1, 2, 3

CLIP_GRAD = 5.0


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def read_idx_images(path):
    """IDX image file (plain or gzip) -> uint8 array (N, H, W). ValueError naming the file otherwise."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 16:
        raise ValueError(f"{path}: {len(raw)} bytes, expected at least the 16-byte IDX image header")
    magic, n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != 0x00000803:
        raise ValueError(f"{path}: IDX magic 0x{magic:08x}, expected 0x00000803 (unsigned byte images, 3 dims)")
    if len(raw) != 16 + n * h * w:
        raise ValueError(f"{path}: header says {n} images of {h}x{w} ({16 + n * h * w} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)


def open_train_images(data_dir):
    """The training images of an MNIST-like directory, centred on a zero canvas of the model's size:
    uint8 (N, S, S); and the (mean, std) normalisation that goes with the dataset."""
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            break
    else:
        raise FileNotFoundError(f"--data {data_dir}: no train-images-idx3-ubyte[.gz] in this directory")
    images = read_idx_images(path)                          # (N, 28, 28)
    n, h, w = images.shape
    S = MODEL.img_size
    if h > S or w > S:
        raise ValueError(f"{path}: images are {h}x{w}, larger than the {S}x{S} canvas")
    canvas = np.zeros((n, S, S), dtype=np.uint8)            # (N, S, S)
    top, left = (S - h) // 2, (S - w) // 2
    canvas[:, top:top + h, left:left + w] = images
    lowered = os.path.abspath(data_dir).lower()
    norm = MNIST_NORM if "mnist" in lowered and "fashion" not in lowered else FASHION_MNIST_NORM
    return canvas, norm


def sample_crop(rng, height, width):
    """torchvision RandomResizedCrop.get_params: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(SCALE[0], SCALE[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))    # Python round: half to even, as torchvision
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height                                # central-crop fallback
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment_batch(canvas, indices, rng, norm):
    """uint8 canvases (N, S, S) at `indices` -> normalised float32 tensor (B, 1, S, S)."""
    S = MODEL.img_size
    images = torch.from_numpy(canvas[indices].astype(np.float32) / 255.0).unsqueeze(1)  # (B, 1, S, S)
    out = torch.empty_like(images)
    for b in range(len(indices)):
        top, left, h, w = sample_crop(rng, S, S)
        crop = images[b:b + 1, :, top:top + h, left:left + w]                          # (1, 1, h, w)
        resized = F.interpolate(crop, size=(S, S), mode="bilinear", align_corners=False)
        if rng.uniform() < 0.5:
            resized = resized.flip(-1)
        out[b] = resized[0]
    return (out - norm[0]) / norm[1]


def mask_batch(rng, batch):
    """Official MaskGenerator for `batch` samples -> float32 (B, h, w) token mask, 1 = masked."""
    rand_size = MODEL.img_size // MASK_PATCH                 # 4: mask-patch grid side
    scale = MASK_PATCH // MODEL.patch_size                    # 2: mask patch in tokens
    count = rand_size * rand_size
    masked = int(math.ceil(count * MASK_RATIO))               # 10 of 16
    coarse = np.zeros((batch, count), dtype=np.float32)       # (B, R*R)
    for b in range(batch):
        coarse[b, rng.permutation(count)[:masked]] = 1.0
    coarse = coarse.reshape(batch, rand_size, rand_size)
    return torch.from_numpy(coarse.repeat(scale, axis=1).repeat(scale, axis=2))  # (B, h, w)


def stream(seed, kind, index):
    """The numpy generator of one random stream: a pure function of (seed, kind, index)."""
    return np.random.default_rng([seed, kind, index])


def blas_library():
    """The BLAS shared library torch is running on (from /proc/self/maps), or "unknown".
    Debian's torch calls whatever libblas.so.3 the alternatives system selects: the reference
    (netlib) BLAS in /usr/lib/x86_64-linux-gnu/blas/ unless OpenBLAS is installed."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = os.path.basename(path).lower()
                if "blas" in name or name.startswith("libmkl"):
                    return path
    except OSError:
        pass
    return "unknown"


# ----------------------------------------------------------------------------------------------
# Model, optimiser, schedule
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def init_model(model):
    """Trunc normal std 0.02 (cut at +-2 absolute) for Linear / Conv weights and the tokens and
    position embedding, zero biases, LayerNorm 1 / 0; no perturbation."""
    enc = model.encoder
    for t in (enc.cls_token, enc.mask_token, enc.pos_embed):
        nn.init.trunc_normal_(t, std=0.02, a=-2.0, b=2.0)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def learning_rate(step, total, warmup, base_lr, warmup_lr, min_lr):
    """include/simmim/optim/schedule.hpp (timm CosineLRScheduler, t_in_epochs=False); lrs already scaled."""
    if step < warmup:
        return warmup_lr + step * (base_lr - warmup_lr) / warmup
    if step >= total:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * step / total))


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, required=True, help="training steps (iterations)")
    p.add_argument("--batch", type=int, default=64, help="images per step (default: 64)")
    p.add_argument("--base-lr", type=float, default=2e-3, help="peak lr per batch 512 (default: 2e-3)")
    p.add_argument("--warmup-lr", type=float, default=1e-6, help="initial warmup lr per batch 512 (default: 1e-6)")
    p.add_argument("--min-lr", type=float, default=1e-5, help="final cosine lr per batch 512 (default: 1e-5)")
    p.add_argument("--warmup", type=int, default=-1, help="linear warmup steps (default: 10%% of the run)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order, augmentation, masks (default: 0)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: os.cpu_count())")
    p.add_argument("--log-every", type=int, default=10, help="log a metrics line every N steps (default: 10)")
    p.add_argument("--out", default="runs/peer", help="output directory (default: runs/peer)")
    p.add_argument("--data", default=DEFAULT_DATA, help=f"directory with train-images-idx3-ubyte[.gz] (default: {DEFAULT_DATA})")
    a = p.parse_args()
    if a.data == "fashion-mnist":
        a.data = DEFAULT_DATA
    if a.warmup < 0:
        a.warmup = a.steps // 10
    checks = [(a.steps >= 1, "--steps must be >= 1"), (a.batch >= 1, "--batch must be >= 1"),
              (a.base_lr > 0 and a.warmup_lr >= 0 and a.min_lr >= 0, "--base-lr must be > 0, --warmup-lr and --min-lr >= 0"),
              (a.warmup <= a.steps, f"--warmup {a.warmup} exceeds the run's {a.steps} steps"),
              (a.weight_decay >= 0, "--weight-decay must be >= 0"), (a.seed >= 0, "--seed must be >= 0"),
              (a.threads >= 1, "--threads must be >= 1"), (a.log_every >= 1, "--log-every must be >= 1"),
              (os.path.isdir(a.data), f"--data {a.data}: no such directory")]
    for ok, message in checks:
        if not ok:
            p.error(message)
    return a


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    try:
        canvas, norm = open_train_images(a.data)
    except (OSError, ValueError) as e:
        sys.exit(f"peer_pretrain: error: {e}")
    steps_per_epoch = canvas.shape[0] // a.batch
    if steps_per_epoch < 1:
        sys.exit(f"peer_pretrain: error: --batch {a.batch} is larger than the dataset ({canvas.shape[0]} images)")
    scale = a.batch / 512.0
    lrs = dict(base_lr=a.base_lr * scale, warmup_lr=a.warmup_lr * scale, min_lr=a.min_lr * scale)

    torch.manual_seed(a.seed)
    model = SimMIM(MODEL)
    init_model(model)
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(adamw_param_groups(model, a.weight_decay), lr=lrs["base_lr"],
                                  betas=(0.9, 0.999), eps=1e-8)

    blas = blas_library()
    print(f"peer_pretrain: vit-t4-32-c1 on {a.data} ({canvas.shape[0]} images), {a.steps} steps of {a.batch} "
          f"({steps_per_epoch} per epoch), {torch.get_num_threads()} threads, torch {torch.__version__}, BLAS {blas}", flush=True)
    if "/blas/libblas.so" in blas:
        print("peer_pretrain: warning: torch runs on the reference (netlib) BLAS, about 8x slower than OpenBLAS here; "
              "install libopenblas0-pthread for timings worth comparing", flush=True)
    metrics_path = os.path.join(a.out, "metrics.jsonl")
    losses = []
    ips = 0.0
    order, order_epoch = None, -1
    t_start = last = time.perf_counter()
    with open(metrics_path, "w") as metrics:
        for step in range(a.steps):
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = stream(a.seed, STREAM_EPOCH_ORDER, epoch).permutation(canvas.shape[0]), epoch
            indices = order[position * a.batch:(position + 1) * a.batch]
            images = augment_batch(canvas, indices, stream(a.seed, STREAM_AUGMENT, step), norm)  # (B, 1, 32, 32)
            mask = mask_batch(stream(a.seed, STREAM_MASK, step), a.batch)                         # (B, 8, 8)

            lr = learning_rate(step, a.steps, a.warmup, **lrs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss, _ = model(images, mask)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD))
            loss_value = float(loss)
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                sys.exit(f"peer_pretrain: error: non-finite loss {loss_value} or gradient norm {grad_norm} at step {step}")
            optimizer.step()

            now = time.perf_counter()
            dt = now - last
            last = now
            step_ips = a.batch / dt if dt > 0 else 0.0
            ips = step_ips if ips == 0.0 else 0.9 * ips + 0.1 * step_ips  # as the C++ progress line
            done = step + 1
            if done % a.log_every == 0 or done == a.steps:
                row = {"step": step, "epoch": epoch, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "images_per_s": ips}
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                losses.append(loss_value)
                elapsed = now - t_start
                eta = elapsed / done * (a.steps - done)
                print(f"step {done}/{a.steps}  epoch {epoch}  loss {loss_value:.4f}  lr {lr:.3g}  grad-norm {grad_norm:.3f}  "
                      f"{ips:.1f} img/s  ETA {int(eta) // 60}m{int(eta) % 60:02d}s", flush=True)

    total_seconds = time.perf_counter() - t_start
    final_loss = float(np.mean(losses[-10:]))
    summary = {"total_seconds": total_seconds, "images_per_s": a.steps * a.batch / total_seconds,
               "final_loss": final_loss, "final_loss_window": min(10, len(losses)), "steps": a.steps,
               "batch": a.batch, "warmup": a.warmup, "base_lr": a.base_lr, "warmup_lr": a.warmup_lr,
               "min_lr": a.min_lr, "weight_decay": a.weight_decay, "seed": a.seed,
               "torch_version": torch.__version__, "threads": torch.get_num_threads(), "blas": blas, "data": a.data}
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(f"done: {a.steps} steps in {total_seconds:.1f} s ({summary['images_per_s']:.1f} img/s), "
          f"final loss {final_loss:.4f} (mean of the last {summary['final_loss_window']} logged)")
    print(f"  metrics {metrics_path}")
    print(f"  summary {os.path.join(a.out, 'summary.json')}")


if __name__ == "__main__":
    main()
