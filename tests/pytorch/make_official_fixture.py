#!/usr/bin/python3
"""Write tests/fixtures/vit_official_tiny.safetensors: the PyTorch reference state of SimMIM with the
official (BEiT-derived) ViT that tests/test_vit_official.cpp checks.

Usage (torch lives in /usr/bin/python3, not in the pyenv python3):
    /usr/bin/python3 tests/pytorch/make_official_fixture.py [--out PATH]

Before writing, the script checks its own reference (official_reference.py): the state-dict names
and order against the official list, the relative position index against a direct formula, the
forward against an independent numpy implementation, and autograd against central finite
differences (float64). After writing, the file must reload bit-exactly. Any failure raises and
nothing is left half-written. See tests/pytorch/README.md for the contents.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile

import numpy as np
import torch

from official_reference import (INIT_VALUES, LAYER_NORM_EPS, LOSS_EPS, OfficialViTConfig, SimMIM,
                                pretrain_param_groups)
from simmim_reference import load_safetensors, save_safetensors

SEED = 0
BATCH = 2
MASK_PATCH = 8
MASK_RATIO = 0.6
MAX_FILE_BYTES = 300 * 1024
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "vit_official_tiny.safetensors")
CONFIG = OfficialViTConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=24, depth=2, num_heads=3,
                           mlp_ratio=4, drop_path_rate=0.0)


def expected_names(cfg: OfficialViTConfig):
    """The official state-dict parameter names, in state-dict order (buffers excluded)."""
    names = ["encoder.cls_token", "encoder.mask_token", "encoder.patch_embed.proj.weight",
             "encoder.patch_embed.proj.bias", "encoder.rel_pos_bias.relative_position_bias_table"]
    for i in range(cfg.depth):
        b = f"encoder.blocks.{i}."
        names += [b + "gamma_1", b + "gamma_2", b + "norm1.weight", b + "norm1.bias", b + "attn.q_bias",
                  b + "attn.v_bias", b + "attn.qkv.weight", b + "attn.proj.weight", b + "attn.proj.bias",
                  b + "norm2.weight", b + "norm2.bias", b + "mlp.fc1.weight", b + "mlp.fc1.bias",
                  b + "mlp.fc2.weight", b + "mlp.fc2.bias"]
    names += ["encoder.norm.weight", "encoder.norm.bias", "decoder.0.weight", "decoder.0.bias"]
    return names


def make_mask(cfg: OfficialViTConfig) -> torch.Tensor:
    """Fixed (B, h, w) float64 mask: 2x2 grid of 8x8 mask patches, ceil(4 * 0.6) = 3 masked per
    sample, upsampled x2 to the 4x4 token grid; the visible one is top-right in sample 0 and
    bottom-left in sample 1."""
    grid, scale = cfg.img_size // MASK_PATCH, MASK_PATCH // cfg.patch_size
    coarse = torch.tensor([[[1, 0], [1, 1]], [[1, 1], [0, 1]]], dtype=torch.float64)
    assert coarse.shape == (BATCH, grid, grid)
    assert all(int(s.sum()) == math.ceil(grid * grid * MASK_RATIO) for s in coarse)
    return coarse.repeat_interleave(scale, 1).repeat_interleave(scale, 2)


@torch.no_grad()
def randomise(model: SimMIM) -> None:
    """Move every parameter away from its init so that each gradient is non-trivial: weights
    += N(0, 0.1), biases / q_bias / v_bias / LayerNorm += N(0, 0.05), gamma = 0.1 + N(0, 0.2),
    the relative position table ~ N(0, 0.5), tokens += N(0, 0.5). Then round to float32, so the
    float64 and float32 runs use the same values and the file can store them as F32."""
    for name, p in model.named_parameters():
        if name.endswith("gamma_1") or name.endswith("gamma_2"):
            p.add_(torch.randn_like(p) * 0.2)
        elif "relative_position_bias_table" in name:
            p.copy_(torch.randn_like(p) * 0.5)
        elif name.endswith("token"):
            p.add_(torch.randn_like(p) * 0.5)
        elif p.ndim == 1:
            p.add_(torch.randn_like(p) * 0.05)
        else:
            p.add_(torch.randn_like(p) * 0.1)
        p.copy_(p.float().double())


def index_by_formula(g: int) -> np.ndarray:
    """relative_position_index from the relative offsets directly (not BEiT's tensor construction)."""
    n, rows = g * g + 1, (2 * g - 1) ** 2 + 3
    idx = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            if i == 0 and j == 0:
                idx[i, j] = rows - 1
            elif i == 0:
                idx[i, j] = rows - 3
            elif j == 0:
                idx[i, j] = rows - 2
            else:
                (ri, ci), (rj, cj) = divmod(i - 1, g), divmod(j - 1, g)
                idx[i, j] = (ri - rj + g - 1) * (2 * g - 1) + (ci - cj + g - 1)
    return idx


def numpy_forward(cfg: OfficialViTConfig, S, x, m):
    """The official forward again in numpy: explicit patch loops, per-head slices, the bias looked up
    per (i, j) through index_by_formula, LayerNorm / softmax / erf-GELU by formula, PixelShuffle by
    its index rule. Returns (loss, pred)."""
    B, C, H, W = x.shape
    p, D, nh = cfg.patch_size, cfg.embed_dim, cfg.num_heads
    hd, h, w = D // nh, H // p, W // p
    N = h * w + 1
    erf = np.vectorize(math.erf)
    idx = index_by_formula(h)
    table = S["encoder.rel_pos_bias.relative_position_bias_table"]

    def layer_norm(t, prefix):
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + LAYER_NORM_EPS) * S[prefix + ".weight"] + S[prefix + ".bias"]

    w_patch = S["encoder.patch_embed.proj.weight"].reshape(D, C * p * p)
    t = np.zeros((B, N, D))
    for b in range(B):
        t[b, 0] = S["encoder.cls_token"][0, 0]
        for i in range(h):
            for j in range(w):
                if m[b, i, j] == 1:
                    t[b, 1 + i * w + j] = S["encoder.mask_token"][0, 0]
                else:
                    patch = x[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)
                    t[b, 1 + i * w + j] = w_patch @ patch + S["encoder.patch_embed.proj.bias"]
    bias = np.zeros((nh, N, N))
    for i in range(N):
        for j in range(N):
            bias[:, i, j] = table[idx[i, j]]
    for blk in range(cfg.depth):
        pre = f"encoder.blocks.{blk}."
        u = layer_norm(t, pre + "norm1")
        qkv = u @ S[pre + "attn.qkv.weight"].T                              # (B, N, 3D), no bias
        q = qkv[..., :D] + S[pre + "attn.q_bias"]
        k = qkv[..., D:2 * D]
        v = qkv[..., 2 * D:] + S[pre + "attn.v_bias"]
        heads = []
        for hh in range(nh):
            sl = slice(hh * hd, (hh + 1) * hd)
            scores = q[..., sl] @ k[..., sl].transpose(0, 2, 1) / math.sqrt(hd) + bias[hh]
            e = np.exp(scores - scores.max(-1, keepdims=True))
            heads.append((e / e.sum(-1, keepdims=True)) @ v[..., sl])
        a = np.concatenate(heads, -1) @ S[pre + "attn.proj.weight"].T + S[pre + "attn.proj.bias"]
        t = t + S[pre + "gamma_1"] * a
        z = layer_norm(t, pre + "norm2") @ S[pre + "mlp.fc1.weight"].T + S[pre + "mlp.fc1.bias"]
        z = 0.5 * z * (1 + erf(z / math.sqrt(2)))
        t = t + S[pre + "gamma_2"] * (z @ S[pre + "mlp.fc2.weight"].T + S[pre + "mlp.fc2.bias"])
    t = layer_norm(t, "encoder.norm")
    w_dec = S["decoder.0.weight"][:, :, 0, 0]
    pred = np.zeros_like(x)
    for b in range(B):
        for i in range(h):
            for j in range(w):
                y = w_dec @ t[b, 1 + i * w + j] + S["decoder.0.bias"]
                for c in range(C):
                    for r in range(p):
                        for s in range(p):
                            pred[b, c, i * p + r, j * p + s] = y[c * p * p + r * p + s]
    mask_px = np.kron(m, np.ones((p, p)))[:, None]
    loss = (np.abs(x - pred) * mask_px).sum() / (mask_px.sum() + LOSS_EPS) / C
    return loss, pred


def finite_difference_check(model, images, mask, grads, per_param=3, h=1e-5):
    gen = torch.Generator().manual_seed(1234)
    checked, worst = 0, 0.0
    with torch.no_grad():
        for name, prm in model.named_parameters():
            flat, g = prm.view(-1), grads[name].reshape(-1)
            picks = [int(g.abs().argmax())] + torch.randint(0, flat.numel(), (per_param,), generator=gen).tolist()
            for i in picks:
                saved = flat[i].item()
                flat[i] = saved + h
                lp = model(images, mask)[0].item()
                flat[i] = saved - h
                lm = model(images, mask)[0].item()
                flat[i] = saved
                fd, ag = (lp - lm) / (2 * h), g[i].item()
                tol = 1e-10 + 1e-6 * abs(ag)
                worst = max(worst, abs(fd - ag) / tol)
                if abs(fd - ag) > tol:
                    raise AssertionError(f"finite differences: {name}[{i}] autograd {ag:.12e} vs {fd:.12e}")
                checked += 1
    print(f"  finite differences: {checked} entries agree (worst {worst:.2f} of the tolerance 1e-10 + 1e-6 |g|)")


def build(cfg: OfficialViTConfig):
    torch.manual_seed(SEED)
    model = SimMIM(cfg).double()
    model.official_init()
    # init as official: gamma 0.1, table zero, weights within +-0.02
    enc = model.encoder
    assert all(float((b.gamma_1 - INIT_VALUES).abs().max()) < 1e-8 for b in enc.blocks)  # 0.1 in float32
    assert float(enc.rel_pos_bias.relative_position_bias_table.abs().max()) == 0.0
    assert float(enc.blocks[0].attn.qkv.weight.abs().max()) <= 0.02
    randomise(model)

    names = [n for n, _ in model.named_parameters()]
    state_names = [n for n in model.state_dict().keys() if not n.endswith("relative_position_index")]
    assert names == state_names == expected_names(cfg), f"parameter names/order differ:\n{names}"
    index = model.encoder.rel_pos_bias.relative_position_index
    assert np.array_equal(index.numpy(), index_by_formula(cfg.grid)), "relative_position_index != formula"

    images = torch.randn(BATCH, cfg.in_chans, cfg.img_size, cfg.img_size, dtype=torch.float64)
    mask = make_mask(cfg)
    model.zero_grad(set_to_none=True)
    loss, pred = model(images, mask)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    assert all(float(g.abs().max()) > 0 for g in grads.values()), "a gradient is identically zero"

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np_loss, np_pred = numpy_forward(cfg, state, images.numpy(), mask.numpy())
    assert np.allclose(np_pred, pred.detach().numpy(), rtol=1e-11, atol=1e-13), "numpy forward differs (pred)"
    assert abs(np_loss - loss.item()) <= 1e-12 * abs(loss.item()), "numpy forward differs (loss)"
    print(f"  numpy forward: max |pred diff| {np.abs(np_pred - pred.detach().numpy()).max():.1e}, "
          f"loss diff {abs(np_loss - loss.item()):.1e}")
    finite_difference_check(model, images, mask, grads)

    model32 = SimMIM(cfg).float()
    model32.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    with torch.no_grad():
        loss32, pred32 = model32(images.float(), mask.float())

    decay, no_decay = pretrain_param_groups(model)
    tensors = {}
    for n, p in model.named_parameters():
        tensors[n] = p.detach().float()  # exact: the values were rounded to float32 in randomise()
    tensors["relative_position_index"] = index.clone()
    tensors["images"] = images
    tensors["mask"] = mask
    tensors["pred"] = pred.detach()
    tensors["loss"] = loss.detach().reshape(())
    for n in names:
        tensors["grad." + n] = grads[n]
    tensors["pred32"] = pred32
    tensors["loss32"] = loss32.reshape(())
    metadata = cfg.to_metadata()
    metadata.update({
        "batch_size": str(BATCH), "mask_patch_size": str(MASK_PATCH), "mask_ratio": str(MASK_RATIO),
        "layer_norm_eps": repr(LAYER_NORM_EPS), "loss_eps": repr(LOSS_EPS), "init_values": repr(INIT_VALUES),
        "seed": str(SEED), "weights": "F32 values (the float64 run upcasts them exactly)",
        "no_decay": ",".join(no_decay), "decay": ",".join(decay),
        "torch_version": torch.__version__, "numpy_version": np.__version__,
        "generator": "tests/pytorch/make_official_fixture.py",
    })
    return tensors, metadata, model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"config: {CONFIG}")
    tensors, metadata, model = build(CONFIG)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".vit_official_tiny.", suffix=".tmp", dir=os.path.dirname(out))
    os.close(fd)
    try:
        save_safetensors(tmp, tensors, metadata)
        back, meta_back = load_safetensors(tmp)
        assert list(back.keys()) == list(tensors.keys()) and meta_back == metadata
        for k, v in tensors.items():
            assert back[k].dtype == v.dtype and torch.equal(back[k], v.detach()), f"round trip: {k}"
        size = os.path.getsize(tmp)
        assert size < MAX_FILE_BYTES, f"fixture is {size} bytes, must stay < {MAX_FILE_BYTES}"
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"loss (f64)   {tensors['loss'].item():.17g}")
    print(f"loss32 (f32) {tensors['loss32'].item():.9g}")
    print(f"no decay: {metadata['no_decay']}")
    print(f"tensors {len(tensors)}, parameters {sum(p.numel() for p in model.parameters())}")
    print(f"wrote {out}: {size} bytes ({size / 1024:.1f} KiB), sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
