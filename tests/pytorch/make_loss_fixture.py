#!/usr/bin/python3
"""Write tests/fixtures/losses_tiny.safetensors: the PyTorch reference of the SimMIM loss ablations.

Usage (torch lives in /usr/bin/python3, not in the pyenv python3):
    /usr/bin/python3 tests/pytorch/make_loss_fixture.py [--out PATH]

For B=2, C=2, 16x16 images, model patch 4 (a 4x4 token grid), prediction resolutions R in {16, 8, 4}
and every combination of L1/L2 x masked/all pixels x raw/normalised target (windows 5 and 47), float64:
the loss and d loss / d pred from autograd; the normalised targets from F.avg_pool2d (the official
norm_targets); d loss / d image through the area averaging for two raw-target cases; and one MLP head
(nn.Sequential(Conv2d 1x1, GELU, Conv2d 1x1, PixelShuffle)) forward/backward. Before writing, the
script checks its own reference: an independent numpy computation of every target and loss (explicit
window loops, explicit mask repetition), central finite differences for a few gradient entries, and a
bit-exact reload of the written file. See tests/pytorch/README.md ("losses_tiny").
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from simmim_reference import load_safetensors, save_safetensors

SEED = 0
B, C, S, P = 2, 2, 16, 4          # batch, channels, image size, model patch size
G = S // P                        # token grid
RESOLUTIONS = (16, 8, 4)          # S, S/2, g
WINDOWS = (5, 47)                 # 47 > 16: the window covers the whole plane
NORMS = ("l1", "l2")
REGIONS = ("masked", "all")
TARGETS = ("raw",) + tuple(f"norm{w}" for w in WINDOWS)
DIMAGE_CASES = (("l1", "masked", 8), ("l2", "all", 4))   # raw target: d loss / d image stored
LOSS_EPS = 1e-5                   # sum(mask) + 1e-5
VAR_EPS = 1e-6                    # (var + 1e-6) ** 0.5
HEAD_B, HEAD_D, HEAD_HIDDEN, HEAD_R = 1, 8, 6, 8   # the head case: one sample, r = 2
MAX_FILE_BYTES = 200 * 1024

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "losses_tiny.safetensors")


def norm_targets(targets, patch_size):
    """The official SimMIM / SwinV2 target normalisation (microsoft/Swin-Transformer, models/simmim.py)."""
    assert patch_size % 2 == 1
    targets_count = torch.ones_like(targets)
    targets_square = targets ** 2.
    targets_mean = F.avg_pool2d(targets, kernel_size=patch_size, stride=1, padding=patch_size // 2,
                                count_include_pad=False)
    targets_square_mean = F.avg_pool2d(targets_square, kernel_size=patch_size, stride=1,
                                       padding=patch_size // 2, count_include_pad=False)
    targets_count = F.avg_pool2d(targets_count, kernel_size=patch_size, stride=1, padding=patch_size // 2,
                                 count_include_pad=True) * (patch_size ** 2)
    targets_var = (targets_square_mean - targets_mean ** 2.) * (targets_count / (targets_count - 1))
    targets_var = torch.clamp(targets_var, min=0.)
    return (targets - targets_mean) / (targets_var + VAR_EPS) ** 0.5


def make_target(images, R, target):
    """Downsample to R x R by area averaging, then (optionally) normalise."""
    x = F.avg_pool2d(images, kernel_size=S // R) if R != S else images
    if target != "raw":
        x = norm_targets(x, int(target[4:]))
    return x


def loss_fn(pred, target, mask, norm, region):
    """The official masked loss (or the mean over all pixels) at the prediction's resolution."""
    r = pred.shape[-1] // G
    err = F.l1_loss(target, pred, reduction="none") if norm == "l1" else F.mse_loss(target, pred, reduction="none")
    if region == "all":
        return err.mean()
    mask_px = mask.repeat_interleave(r, 1).repeat_interleave(r, 2).unsqueeze(1).contiguous()
    return (err * mask_px).sum() / (mask_px.sum() + LOSS_EPS) / C


# ---- independent numpy reference ----
def np_target(images, R, target):
    k = S // R
    x = images.reshape(B, C, R, k, R, k).mean(axis=(3, 5)) if k > 1 else images.copy()
    if target == "raw":
        return x
    w = int(target[4:])
    h = w // 2
    out = np.empty_like(x)
    for b in range(B):
        for c in range(C):
            for y in range(R):
                for xx in range(R):
                    win = x[b, c, max(y - h, 0):y + h + 1, max(xx - h, 0):xx + h + 1]
                    m = win.mean()
                    var = ((win - m) ** 2).sum() / (win.size - 1)
                    out[b, c, y, xx] = (x[b, c, y, xx] - m) / np.sqrt(var + VAR_EPS)
    return out


def np_loss(pred, target, mask, norm, region):
    R = pred.shape[-1]
    r = R // G
    d = pred - target
    err = np.abs(d) if norm == "l1" else d * d
    if region == "all":
        return err.sum() / err.size
    mask_px = np.zeros((B, 1, R, R))
    for b in range(B):
        for y in range(R):
            for x in range(R):
                mask_px[b, 0, y, x] = mask[b, y // r, x // r]
    return (err * mask_px).sum() / (mask_px.sum() + LOSS_EPS) / C


def fd_check(f, x, grad, picks, h=1e-6, tol=1e-7):
    """Central differences of scalar f() w.r.t. the flat entries `picks` of x, against grad."""
    worst = 0.0
    flat = x.view(-1)
    with torch.no_grad():
        for i in picks:
            saved = flat[i].item()
            flat[i] = saved + h
            fp = f().item()
            flat[i] = saved - h
            fm = f().item()
            flat[i] = saved
            fd = (fp - fm) / (2 * h)
            g = grad.reshape(-1)[i].item()
            assert abs(fd - g) <= tol + 1e-6 * abs(g), f"finite difference {fd} vs autograd {g} at {i}"
            worst = max(worst, abs(fd - g))
    return worst


def build():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    images = torch.randn(B, C, S, S, dtype=torch.float64, generator=gen) * 0.8 + 0.3
    mask = (torch.rand(B, G, G, generator=gen) < 0.5).to(torch.float64)
    mask[0, 0, 0], mask[0, 0, 1], mask[1, 3, 3], mask[1, 3, 2] = 1, 0, 1, 0   # both values in both samples
    preds = {R: torch.randn(B, C, R, R, dtype=torch.float64, generator=gen) for R in RESOLUTIONS}

    tensors = {"images": images, "mask": mask}
    for R in RESOLUTIONS:
        tensors[f"pred.R{R}"] = preds[R]
    # targets: downsampled raw (R < S) and every normalised one, checked against numpy
    worst_target = 0.0
    for R in RESOLUTIONS:
        for target in TARGETS:
            t = make_target(images, R, target)
            ref = np_target(images.numpy(), R, target)
            err = np.abs(t.numpy() - ref).max()
            assert err <= 1e-12 * max(1.0, np.abs(ref).max()), f"target {target} R{R}: torch vs numpy {err}"
            worst_target = max(worst_target, err)
            if target != "raw" or R != S:
                tensors[f"target.{target}.R{R}"] = t

    worst_loss, worst_fd, cases = 0.0, 0.0, 0
    fd_gen = torch.Generator().manual_seed(SEED + 2)
    for R in RESOLUTIONS:
        for target in TARGETS:
            for norm in NORMS:
                for region in REGIONS:
                    name = f"{norm}.{region}.{target}.R{R}"
                    pred = preds[R].clone().requires_grad_(True)
                    img = images.clone().requires_grad_(target == "raw")
                    tgt = make_target(img if target == "raw" else images, R, target)
                    loss = loss_fn(pred, tgt, mask, norm, region)
                    loss.backward()
                    ref = np_loss(preds[R].numpy(), tgt.detach().numpy(), mask.numpy(), norm, region)
                    assert abs(loss.item() - ref) <= 1e-13 * abs(ref), f"{name}: torch {loss.item()} vs numpy {ref}"
                    worst_loss = max(worst_loss, abs(loss.item() - ref) / abs(ref))
                    picks = torch.randint(0, pred.numel(), (4,), generator=fd_gen).tolist()
                    worst_fd = max(worst_fd, fd_check(lambda: loss_fn(pred, tgt.detach(), mask, norm, region),
                                                      pred, pred.grad, picks))
                    tensors[f"loss.{name}"] = loss.detach().reshape(())
                    tensors[f"dpred.{name}"] = pred.grad.detach()
                    if target == "raw" and (norm, region, R) in DIMAGE_CASES:
                        picks = torch.randint(0, img.numel(), (4,), generator=fd_gen).tolist()
                        worst_fd = max(worst_fd, fd_check(
                            lambda: loss_fn(pred, make_target(img, R, "raw"), mask, norm, region), img, img.grad, picks))
                        tensors[f"dimage.{name}"] = img.grad.detach()
                    cases += 1

    # one MLP head: decoder = Sequential(Conv2d(D, Hidden, 1), GELU(), Conv2d(Hidden, r*r*C, 1), PixelShuffle(r))
    r = HEAD_R // G
    head = nn.Sequential(nn.Conv2d(HEAD_D, HEAD_HIDDEN, 1), nn.GELU(), nn.Conv2d(HEAD_HIDDEN, r * r * C, 1),
                         nn.PixelShuffle(r)).double()
    with torch.no_grad():
        for prm in head.parameters():
            prm.copy_(torch.randn(prm.shape, dtype=torch.float64, generator=gen) * 0.5)
    features = torch.randn(HEAD_B, G * G, HEAD_D, dtype=torch.float64, generator=gen)    # (B, L, D) token rows
    fmap = features.clone().requires_grad_(True)
    out = head(fmap.transpose(1, 2).reshape(HEAD_B, HEAD_D, G, G))                      # (B, C, R, R)
    weights = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    (out * weights).sum().backward()
    for name, prm in head.state_dict().items():
        tensors[f"head.{name}"] = prm
    tensors["head.features"] = features
    tensors["head.out_weights"] = weights
    tensors["head.out"] = out.detach()
    tensors["head.dfeatures"] = fmap.grad
    for name, prm in head.named_parameters():
        tensors[f"head.grad.{name}"] = prm.grad

    metadata = {
        "batch_size": str(B), "in_chans": str(C), "img_size": str(S), "patch_size": str(P),
        "resolutions": ",".join(map(str, RESOLUTIONS)), "norm_windows": ",".join(map(str, WINDOWS)),
        "loss_eps": repr(LOSS_EPS), "var_eps": repr(VAR_EPS), "seed": str(SEED),
        "head": f"B={HEAD_B},D={HEAD_D},hidden={HEAD_HIDDEN},R={HEAD_R}",
        "torch_version": torch.__version__, "numpy_version": np.__version__,
        "generator": "tests/pytorch/make_loss_fixture.py",
    }
    report = dict(cases=cases, worst_target=worst_target, worst_loss=worst_loss, worst_fd=worst_fd)
    return tensors, metadata, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tensors, metadata, report = build()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".losses_tiny.", suffix=".tmp", dir=os.path.dirname(out))
    os.close(fd)
    try:
        save_safetensors(tmp, tensors, metadata)
        back, meta_back = load_safetensors(tmp)
        assert meta_back == metadata, "metadata changed in the round trip"
        assert list(back) == list(tensors), "tensor order changed in the round trip"
        for k, v in tensors.items():
            assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k
        size = os.path.getsize(tmp)
        assert size < MAX_FILE_BYTES, f"fixture is {size} bytes, must stay under {MAX_FILE_BYTES}"
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {out} ({size} bytes, {len(tensors)} tensors)")
    print(f"  {report['cases']} loss cases; torch vs numpy: targets max abs {report['worst_target']:.2e}, "
          f"losses max rel {report['worst_loss']:.2e}; finite differences max abs {report['worst_fd']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
