#!/usr/bin/python3
"""Write tests/fixtures/vit_tiny.safetensors: the PyTorch reference state the C++ tests check.

Usage (from anywhere; torch lives in /usr/bin/python3, not in the pyenv python3):
    /usr/bin/python3 tests/pytorch/make_fixture.py [--out PATH]

Before writing, the script checks its own reference: autograd gradients against central finite
differences (float64), a hand-written AdamW against torch.optim.AdamW, and after writing, that the
file reloads bit-exactly and that load_state_from_safetensors rebuilds a model reproducing the
stored prediction and loss. Any failed check raises and nothing is left half-written.
See tests/pytorch/README.md for the contents.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import math
import os
import sys
import tempfile

import numpy as np
import torch

from simmim_reference import (SimMIM, ViTConfig, adamw_param_groups, load_safetensors,
                              load_state_from_safetensors, no_weight_decay_names, save_safetensors)

SEED = 0
BATCH = 2
MASK_PATCH = 8
MASK_RATIO = 0.6
PERTURB_STD = 0.05
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
ADAMW_STEPS = 5
ADAMW_FINAL_NAMES = ("encoder.mask_token", "encoder.blocks.0.attn.qkv.weight", "decoder.0.bias")
MAX_FILE_BYTES = 600 * 1024

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "vit_tiny.safetensors")


def make_mask(cfg: ViTConfig) -> torch.Tensor:
    """Fixed mask (B, h, w) in float64: a 2x2 grid of 8x8 mask patches, ceil(4 * 0.6) = 3 masked
    per sample, upsampled x2 (mask patch / model patch) to the 4x4 token grid. The one visible
    mask patch is top-right in sample 0 and bottom-left in sample 1, so a transposed or
    batch-swapped mask gives a different loss."""
    grid = cfg.img_size // MASK_PATCH
    scale = MASK_PATCH // cfg.patch_size
    coarse = torch.tensor([[[1, 0],
                            [1, 1]],
                           [[1, 1],
                            [0, 1]]], dtype=torch.float64)          # (B, 2, 2)
    assert coarse.shape == (BATCH, grid, grid)
    expected_masked = math.ceil(grid * grid * MASK_RATIO)
    assert all(int(s.sum()) == expected_masked for s in coarse), "mask count != ceil(R*R*ratio)"
    return coarse.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # (B, h, w)


def finite_difference_check(model: SimMIM, images, mask, grads, per_param: int = 3,
                            h: float = 1e-5) -> int:
    """Compare autograd gradients with central differences (float64) for every parameter: the
    entry of largest |grad| plus `per_param` entries drawn by a seeded generator."""
    gen = torch.Generator().manual_seed(1234)
    checked = 0
    worst = 0.0
    with torch.no_grad():
        for name, prm in model.named_parameters():
            flat = prm.view(-1)
            g = grads[name].reshape(-1)
            picks = [int(g.abs().argmax())]
            picks += torch.randint(0, flat.numel(), (per_param,), generator=gen).tolist()
            for i in picks:
                saved = flat[i].item()
                flat[i] = saved + h
                lp = model(images, mask)[0].item()
                flat[i] = saved - h
                lm = model(images, mask)[0].item()
                flat[i] = saved
                fd = (lp - lm) / (2 * h)
                ag = g[i].item()
                err = abs(fd - ag)
                worst = max(worst, err / (1e-10 + 1e-6 * abs(ag)))
                if err > 1e-10 + 1e-6 * abs(ag):
                    raise AssertionError(f"finite differences: {name}[{i}] autograd {ag:.12e} "
                                         f"vs central difference {fd:.12e} (|diff| {err:.3e})")
                checked += 1
    print(f"  finite differences: {checked} entries over {len(grads)} parameters agree "
          f"(worst error {worst:.1e} of the tolerance 1e-10 + 1e-6 |grad|)")
    return checked


def numpy_forward(cfg: ViTConfig, state, images, mask):
    """The same forward written independently in numpy (explicit patch loops, per-head slices,
    LayerNorm / softmax / erf-GELU by formula, PixelShuffle by its index rule
    out[c, i*p + r, j*p + s] = in[c*p*p + r*p + s, i, j]). Returns (loss, pred)."""
    S = {k: v.detach().numpy() for k, v in state.items()}
    x, m = images.numpy(), mask.numpy()
    B, C, H, W = x.shape
    p, D, nh = cfg.patch_size, cfg.embed_dim, cfg.num_heads
    hd, h, w = D // nh, H // p, W // p
    erf = np.vectorize(math.erf)

    def layer_norm(t, prefix):
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + 1e-6) * S[prefix + ".weight"] + S[prefix + ".bias"]

    def linear(t, prefix):
        return t @ S[prefix + ".weight"].T + S[prefix + ".bias"]

    w_patch = S["encoder.patch_embed.proj.weight"].reshape(D, C * p * p)
    tokens = np.zeros((B, h * w + 1, D))                                   # (B, N, D)
    for b in range(B):
        tokens[b, 0] = S["encoder.cls_token"][0, 0]
        for i in range(h):
            for j in range(w):
                if m[b, i, j] == 1:
                    tokens[b, 1 + i * w + j] = S["encoder.mask_token"][0, 0]
                else:
                    patch = x[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)
                    tokens[b, 1 + i * w + j] = w_patch @ patch + S["encoder.patch_embed.proj.bias"]
    t = tokens + S["encoder.pos_embed"][0]
    for blk in range(cfg.depth):
        pre = f"encoder.blocks.{blk}"
        qkv = linear(layer_norm(t, pre + ".norm1"), pre + ".attn.qkv")      # (B, N, 3D)
        heads_out = []
        for head in range(nh):
            q = qkv[..., 0 * D + head * hd: 0 * D + (head + 1) * hd]
            k = qkv[..., 1 * D + head * hd: 1 * D + (head + 1) * hd]
            v = qkv[..., 2 * D + head * hd: 2 * D + (head + 1) * hd]
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)               # (B, N, N)
            e = np.exp(scores - scores.max(-1, keepdims=True))
            heads_out.append((e / e.sum(-1, keepdims=True)) @ v)            # (B, N, hd)
        t = t + linear(np.concatenate(heads_out, -1), pre + ".attn.proj")
        u = linear(layer_norm(t, pre + ".norm2"), pre + ".mlp.fc1")
        t = t + linear(0.5 * u * (1 + erf(u / math.sqrt(2))), pre + ".mlp.fc2")
    t = layer_norm(t, "encoder.norm")
    w_dec = S["decoder.0.weight"][:, :, 0, 0]                               # (p*p*C, D)
    pred = np.zeros_like(x)
    for b in range(B):
        for i in range(h):
            for j in range(w):
                y = w_dec @ t[b, 1 + i * w + j] + S["decoder.0.bias"]       # (p*p*C,)
                for c in range(C):
                    for r in range(p):
                        for s in range(p):
                            pred[b, c, i * p + r, j * p + s] = y[c * p * p + r * p + s]
    mask_px = np.kron(m, np.ones((p, p)))[:, None]                          # (B, 1, H, W)
    loss = (np.abs(x - pred) * mask_px).sum() / (mask_px.sum() + 1e-5) / C
    return loss, pred


class HandAdamW:
    """The AdamW update written out (torch 1.13 single-tensor order), as a check of the formula
    the README documents for the C++ optimizer:
        p *= 1 - lr * wd
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)"""

    def __init__(self, named_params, decay_names, lr, betas, eps, weight_decay):
        self.params = dict(named_params)
        self.wd = {n: (weight_decay if n in decay_names else 0.0) for n in self.params}
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, grads):
        self.t += 1
        bc1 = 1 - self.b1 ** self.t
        bc2_sqrt = math.sqrt(1 - self.b2 ** self.t)
        for n, p in self.params.items():
            g = grads[n]
            p.mul_(1 - self.lr * self.wd[n])
            self.m[n].mul_(self.b1).add_(g, alpha=1 - self.b1)
            self.v[n].mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.addcdiv_(self.m[n], (self.v[n].sqrt() / bc2_sqrt).add_(self.eps), value=-self.lr / bc1)


def run_adamw(model: SimMIM, images, mask, check_against_hand: bool):
    """ADAMW_STEPS steps of torch.optim.AdamW on a copy of `model`; returns (losses, model) where
    losses[k] is the loss before update k (with the parameters after k updates)."""
    model = copy.deepcopy(model)
    opt = torch.optim.AdamW(adamw_param_groups(model, ADAMW["weight_decay"]), lr=ADAMW["lr"],
                            betas=ADAMW["betas"], eps=ADAMW["eps"], amsgrad=False, foreach=False)
    hand_model = copy.deepcopy(model)
    decay = {n for n, p in model.named_parameters()
             if p.ndim > 1 and n not in no_weight_decay_names()}
    hand = HandAdamW(hand_model.named_parameters(), decay, **ADAMW)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad(set_to_none=True)
        loss, _ = model(images, mask)
        losses.append(loss.item())
        loss.backward()
        if check_against_hand:
            hand.step({n: p.grad for n, p in model.named_parameters()})
        opt.step()
        if check_against_hand:
            for (n, p), (_, q) in zip(model.named_parameters(), hand_model.named_parameters()):
                assert torch.equal(q, p), f"hand AdamW differs from torch.optim.AdamW on {n}"
    return torch.tensor(losses, dtype=images.dtype), model


def build(cfg: ViTConfig):
    """Everything the fixture holds, in file order, plus the metadata."""
    torch.manual_seed(SEED)
    model = SimMIM(cfg).double()
    model.init_weights(perturb_std=PERTURB_STD)
    images = torch.randn(BATCH, cfg.in_chans, cfg.img_size, cfg.img_size, dtype=torch.float64)
    mask = make_mask(cfg)

    # float64 forward / backward
    loss, pred = model(images, mask)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    np_loss, np_pred = numpy_forward(cfg, model.state_dict(), images, mask)
    np.testing.assert_allclose(pred.detach().numpy(), np_pred, rtol=1e-11, atol=1e-13,
                               err_msg="torch forward vs independent numpy forward: pred")
    np.testing.assert_allclose(loss.item(), np_loss, rtol=1e-12,
                               err_msg="torch forward vs independent numpy forward: loss")
    print(f"  independent numpy forward agrees (max |pred diff| "
          f"{np.abs(pred.detach().numpy() - np_pred).max():.1e})")
    for n, g in grads.items():
        assert g.abs().max() > 0, f"gradient of {n} is identically zero: fixture would be trivial"
    model.zero_grad(set_to_none=True)
    finite_difference_check(model, images, mask, grads)

    # float32 forward with the same weights
    model32 = copy.deepcopy(model).float()
    with torch.no_grad():
        loss32, pred32 = model32(images.float(), mask.float())

    # AdamW, both precisions
    adamw_losses, final64 = run_adamw(model, images, mask, check_against_hand=True)
    adamw_losses32, _ = run_adamw(model32, images.float(), mask.float(), check_against_hand=False)
    print("  hand-written AdamW matches torch.optim.AdamW (float64, 5 steps)")
    assert adamw_losses[-1] < adamw_losses[0], "AdamW did not reduce the loss"
    final_params = dict(final64.named_parameters())

    tensors = {}
    for n, p in model.state_dict().items():
        tensors[n] = p
    tensors["images"] = images
    tensors["mask"] = mask
    tensors["pred"] = pred.detach()
    tensors["loss"] = loss.detach()
    for n, g in grads.items():
        tensors[f"grad.{n}"] = g
    tensors["pred32"] = pred32
    tensors["loss32"] = loss32
    tensors["adamw_losses"] = adamw_losses
    tensors["adamw_losses32"] = adamw_losses32
    for n in ADAMW_FINAL_NAMES:
        tensors[f"adamw_final.{n}"] = final_params[n].detach()

    metadata = cfg.to_metadata()
    metadata.update({
        "batch_size": str(BATCH),
        "mask_patch_size": str(MASK_PATCH),
        "mask_ratio": repr(MASK_RATIO),
        "loss_eps": "1e-05",
        "seed": str(SEED),
        "init": f"trunc_normal std 0.02 (a=-2, b=2), zero bias, LayerNorm 1/0, then N(0, {PERTURB_STD}) "
                "added to every LayerNorm weight/bias and every bias",
        "adamw_lr": repr(ADAMW["lr"]),
        "adamw_betas": f"{ADAMW['betas'][0]!r},{ADAMW['betas'][1]!r}",
        "adamw_eps": repr(ADAMW["eps"]),
        "adamw_weight_decay": repr(ADAMW["weight_decay"]),
        "adamw_no_decay": "1-D tensors, biases, " + ",".join(no_weight_decay_names()),
        "adamw_steps": str(ADAMW_STEPS),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "generator": "tests/pytorch/make_fixture.py",
    })
    return tensors, metadata, model


def verify_written(path: str, tensors, metadata, model: SimMIM) -> None:
    """The file reloads bit-exactly, and a model rebuilt from it reproduces pred and loss."""
    back, meta_back = load_safetensors(path)
    assert list(back) == list(tensors), "tensor names or order changed in the round trip"
    assert meta_back == metadata, "metadata changed in the round trip"
    for n, t in tensors.items():
        b = back[n]
        assert b.dtype == t.dtype and b.shape == t.shape, f"{n}: dtype/shape changed in the round trip"
        assert torch.equal(b, t.detach()), f"{n}: values changed in the round trip"
    rebuilt, extras = load_state_from_safetensors(path)
    assert rebuilt.cfg == model.cfg, f"inferred config {rebuilt.cfg} != {model.cfg}"
    with torch.no_grad():
        loss, pred = rebuilt(extras["images"], extras["mask"])
    assert torch.equal(pred, tensors["pred"]) and torch.equal(loss, tensors["loss"]), \
        "model rebuilt by load_state_from_safetensors does not reproduce pred/loss"
    assert rebuilt.encoder.blocks[0].attn.num_heads == model.cfg.num_heads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args()

    torch.set_num_threads(1)  # reproducible reductions, byte-identical regeneration
    cfg = ViTConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                    mlp_ratio=4)
    print(f"config: {cfg}")
    tensors, metadata, model = build(cfg)

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".vit_tiny.", suffix=".tmp", dir=os.path.dirname(out))
    os.close(fd)
    try:
        save_safetensors(tmp, tensors, metadata)
        verify_written(tmp, tensors, metadata, model)
        size = os.path.getsize(tmp)
        assert size < MAX_FILE_BYTES, f"fixture is {size} bytes, must stay < {MAX_FILE_BYTES}"
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print("  round trip: all tensors and metadata reload bit-exactly; "
          "load_state_from_safetensors reproduces pred and loss")
    print(f"loss (f64)      {tensors['loss'].item():.17g}")
    print(f"loss32 (f32)    {tensors['loss32'].item():.9g}")
    print("adamw_losses    " + " ".join(f"{v:.17g}" for v in tensors["adamw_losses"].tolist()))
    print("adamw_losses32  " + " ".join(f"{v:.9g}" for v in tensors["adamw_losses32"].tolist()))
    print(f"tensors {len(tensors)}, parameters {sum(p.numel() for p in model.parameters())}")
    print(f"wrote {out}: {size} bytes ({size / 1024:.1f} KiB), sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
