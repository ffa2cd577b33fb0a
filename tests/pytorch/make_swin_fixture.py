#!/usr/bin/python3
"""Write the Swin SimMIM fixtures: tests/fixtures/swin_tiny.safetensors, swin_clamp.safetensors and
swin_d32_ref.safetensors, the PyTorch reference states the C++ Swin encoder is checked against.

Usage (torch lives in /usr/bin/python3, not in the pyenv python3):
    /usr/bin/python3 tests/pytorch/make_swin_fixture.py [--out-dir DIR]

Before writing, the script checks its own reference (swin_reference.py) and raises on any failure:
state-dict names / order / buffers against a list built from the specification; the relative
position index (window 2 literal, other windows by formula); central finite differences (float64)
for every parameter and some image entries of swin-tiny-test and swin-clamp-test (the latter with
splitmix64 hash weights, scale 0.2, that are not stored); an independent
numpy forward (explicit window / head loops, roll by index arithmetic) for all three configurations;
the splitmix64 hash against a pure-Python version. All files are written to temporary names,
reloaded and compared bit-exactly, and only then renamed into place. See tests/pytorch/README.md.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch

from simmim_reference import load_safetensors, save_safetensors
from swin_reference import (HASH_FORMULA, HASH_SCALE, LAYER_NORM_EPS, LOSS_EPS, MASK_VALUE, SimMIM,
                            SwinConfig, hash_formula, hash_images, hash_init, hash_uniform,
                            load_swin_from_safetensors,
                            relative_position_index, splitmix64, splitmix64_int)

SEED = 0
BATCH = 2
MASK_RATIO = 0.6
PERTURB_STD = 0.05
FD_H = 1e-5
GRADIDX_SEED = 1234
CLAMP_HASH_SCALE = 0.2   # swin_clamp hash weights: 0.2 v (not 0.02 v) so gradients are not tiny
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")

# Coarse masks at the mask-patch grid (4x4 in all three fixtures), ceil(16 * 0.6) = 10 masked cells
# per sample; no sample equals its transpose, the two samples differ.
COARSE_A = [[[1, 1, 0, 1],
             [0, 1, 1, 0],
             [1, 1, 0, 1],
             [1, 0, 1, 0]],
            [[0, 1, 1, 1],
             [1, 0, 1, 1],
             [1, 1, 0, 0],
             [0, 1, 0, 1]]]
COARSE_D32 = [[[1, 0, 1, 1],
               [1, 1, 0, 1],
               [0, 1, 1, 0],
               [1, 0, 1, 0]],
              [[1, 1, 1, 0],
               [0, 0, 1, 1],
               [1, 1, 0, 1],
               [0, 1, 1, 0]]]

# name, file, config, mask patch, coarse mask, size limit (bytes), weights
# weights "official": official init + noise, the full state dict stored (swin_tiny: full float64
# weights + gradients of 36,636 parameters take 586,176 bytes, hence the 700 KiB limit);
# "hash": splitmix64 weights with scale CLAMP_HASH_SCALE, NOT stored (only the buffers), full
# gradients stored (swin_clamp: 39,168 parameters, 313,344 bytes of gradients).
FIXTURES = [
    ("swin-tiny-test", "swin_tiny.safetensors",
     SwinConfig(img_size=16, in_chans=3, patch_size=2, window_size=4, embed_dim=16,
                depths=[2, 2], num_heads=[2, 4]), 4, COARSE_A, 700 * 1024, "official"),
    ("swin-clamp-test", "swin_clamp.safetensors",
     SwinConfig(img_size=16, in_chans=1, patch_size=2, window_size=4, embed_dim=8,
                depths=[2, 2, 2], num_heads=[2, 2, 4]), 4, COARSE_A, 350 * 1024, "hash"),
]
D32 = ("swin-d32", "swin_d32_ref.safetensors",
       SwinConfig(img_size=32, in_chans=3, patch_size=2, window_size=4, embed_dim=48,
                  depths=[2, 2, 6], num_heads=[3, 6, 12]), 8, COARSE_D32, 200 * 1024)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
def make_mask(cfg: SwinConfig, mask_patch: int, coarse) -> torch.Tensor:
    """(B, g, g) float64 model-patch mask: the fixed coarse pattern, nearest-upsampled by
    mask_patch / patch_size (MaskGenerator's .repeat(scale, 0).repeat(scale, 1))."""
    assert cfg.img_size % mask_patch == 0 and mask_patch % cfg.patch_size == 0
    grid, scale = cfg.img_size // mask_patch, mask_patch // cfg.patch_size
    c = torch.tensor(coarse, dtype=torch.float64)
    assert c.shape == (BATCH, grid, grid)
    count = math.ceil(grid * grid * MASK_RATIO)
    assert all(int(s.sum()) == count for s in c), "mask count != ceil(cells * ratio)"
    assert not torch.equal(c[0], c[1]) and all(not torch.equal(s, s.t()) for s in c)
    m = c.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    assert m.shape == (BATCH, cfg.grid, cfg.grid)
    return m


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------
def expected_state_names(cfg: SwinConfig):
    """Official state-dict names in order, from the specification: [(name, kind)], kind 'p'
    (parameter) or 'b' (buffer)."""
    out = [("encoder.mask_token", "p"),
           ("encoder.patch_embed.proj.weight", "p"), ("encoder.patch_embed.proj.bias", "p"),
           ("encoder.patch_embed.norm.weight", "p"), ("encoder.patch_embed.norm.bias", "p")]
    for i in range(cfg.num_stages):
        res = cfg.grid // 2 ** i
        for j in range(cfg.depths[i]):
            b = f"encoder.layers.{i}.blocks.{j}."
            if res > cfg.window_size and j % 2 == 1:
                out.append((b + "attn_mask", "b"))
            out += [(b + "norm1.weight", "p"), (b + "norm1.bias", "p"),
                    (b + "attn.relative_position_bias_table", "p"),
                    (b + "attn.relative_position_index", "b"),
                    (b + "attn.qkv.weight", "p"), (b + "attn.qkv.bias", "p"),
                    (b + "attn.proj.weight", "p"), (b + "attn.proj.bias", "p"),
                    (b + "norm2.weight", "p"), (b + "norm2.bias", "p"),
                    (b + "mlp.fc1.weight", "p"), (b + "mlp.fc1.bias", "p"),
                    (b + "mlp.fc2.weight", "p"), (b + "mlp.fc2.bias", "p")]
        if i + 1 < cfg.num_stages:
            d = f"encoder.layers.{i}.downsample."
            out += [(d + "reduction.weight", "p"), (d + "norm.weight", "p"), (d + "norm.bias", "p")]
    out += [("encoder.norm.weight", "p"), ("encoder.norm.bias", "p"),
            ("decoder.0.weight", "p"), ("decoder.0.bias", "p")]
    return out


def check_structure(model: SimMIM) -> None:
    cfg = model.cfg
    exp = expected_state_names(cfg)
    sd = model.state_dict()
    assert list(sd) == [n for n, _ in exp], "state_dict names/order differ from the specification"
    assert [n for n, _ in model.named_parameters()] == [n for n, k in exp if k == "p"]
    for n, t in sd.items():
        if n.endswith("relative_position_index"):
            ws = math.isqrt(t.shape[0])
            assert t.dtype == torch.int64 and torch.equal(t, relative_position_index(ws))
        if n.endswith("attn_mask"):
            i = int(n.split(".")[2])
            res, ws = cfg.stage_resolution(i), cfg.window_size
            assert t.shape == ((res // ws) ** 2, ws * ws, ws * ws)
            assert set(t.unique().tolist()) == {0.0, MASK_VALUE}
    for i in range(cfg.num_stages):
        for j, blk in enumerate(model.encoder.layers[i].blocks):
            assert blk.ws == cfg.stage_window(i) and blk.shift == cfg.block_shift(i, j)
            assert blk.attn.relative_position_bias_table.shape == ((2 * blk.ws - 1) ** 2, cfg.num_heads[i])
    assert model.decoder[0].weight.shape == (cfg.encoder_stride ** 2 * cfg.in_chans, cfg.num_features, 1, 1)


def check_relative_position_index() -> None:
    want = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    got = relative_position_index(2)
    assert got.dtype == torch.int64 and torch.equal(got, want), f"window 2 index:\n{got}"
    for ws in range(1, 8):
        idx = relative_position_index(ws)
        for i in range(ws * ws):
            for j in range(ws * ws):
                hi, wi, hj, wj = i // ws, i % ws, j // ws, j % ws
                assert idx[i, j] == (hi - hj + ws - 1) * (2 * ws - 1) + (wi - wj + ws - 1)
    print("  relative_position_index: window 2 equals [[4,3,1,0],[5,4,2,1],[7,6,4,3],[8,7,5,4]]; "
          "windows 1..7 equal the closed formula")


def check_hash() -> None:
    xs = [0, 1, 1234567, (1 << 32), (1 << 32) + 5, (1001 << 32) + 99, (1 << 64) - 1]
    got = splitmix64(np.array(xs, dtype=np.uint64))
    for x, z in zip(xs, got.tolist()):
        assert z == splitmix64_int(x), f"splitmix64({x})"
    # Vigna's splitmix64.c seeded with 1234567: first output = splitmix64(1234567) on the state
    assert splitmix64_int(1234567) == 6457827717110365317
    for k in (0, 7, 1000):
        v = hash_uniform(k, 50)
        for i in (0, 1, 49):
            z = splitmix64_int(((k + 1) << 32) + i)
            assert v[i] == 2.0 * ((z >> 11) * 2.0 ** -53) - 1.0
    assert hash_formula(HASH_SCALE) == HASH_FORMULA and "0.2 v for every other" in hash_formula(CLAMP_HASH_SCALE)
    print("  splitmix64 (numpy) equals the pure-Python version and the splitmix64.c test vector")


def finite_difference_check(model: SimMIM, images, mask, grads, grad_images, per_param=3,
                            image_picks=6, h=FD_H) -> None:
    """Central differences (float64) for every parameter (argmax |grad| + per_param seeded random
    entries) and for some image entries (argmax + seeded random; the image is both input and
    target). Tolerance 1e-10 + 1e-6 |grad|."""
    gen = torch.Generator().manual_seed(1234)
    worst, checked = 0.0, 0

    def one(flat, i, ag, label):
        nonlocal worst, checked
        saved = flat[i].item()
        flat[i] = saved + h
        lp = model(images, mask)[0].item()
        flat[i] = saved - h
        lm = model(images, mask)[0].item()
        flat[i] = saved
        fd = (lp - lm) / (2 * h)
        tol = 1e-10 + 1e-6 * abs(ag)
        err = abs(fd - ag)
        worst = max(worst, err / tol)
        if err > tol:
            raise AssertionError(f"finite differences: {label}[{i}] autograd {ag:.12e} vs central "
                                 f"difference {fd:.12e} (|diff| {err:.3e} > {tol:.3e})")
        checked += 1

    with torch.no_grad():
        for name, prm in model.named_parameters():
            flat, g = prm.view(-1), grads[name].reshape(-1)
            picks = [int(g.abs().argmax())]
            picks += torch.randint(0, flat.numel(), (per_param,), generator=gen).tolist()
            for i in picks:
                one(flat, i, g[i].item(), name)
        flat, g = images.view(-1), grad_images.reshape(-1)
        picks = [int(g.abs().argmax())]
        picks += torch.randint(0, flat.numel(), (image_picks - 1,), generator=gen).tolist()
        for i in picks:
            one(flat, i, g[i].item(), "images")
    print(f"  finite differences: {checked} entries ({len(grads)} parameters + images) agree "
          f"(worst {worst:.2f} of the tolerance 1e-10 + 1e-6 |grad|)")


def numpy_forward(cfg: SwinConfig, state, images, mask):
    """The forward written again in numpy, independently of the torch modules: patch conv by
    explicit patch loops, mask-token substitution by the mask value, LayerNorm / softmax /
    erf-GELU by formula, the clamp rule and shift inline, the cyclic shift by index arithmetic
    (the token at rolled position (r, c) is original token ((r + s) % H, (c + s) % W)), windows
    and heads by explicit loops, the relative position bias looked up by the closed formula, the
    shifted-window mask from region labels, PatchMerging by explicit gathers, PixelShuffle by
    out[c, i*r + a, j*r + b] = in[c*r*r + a*r + b, i, j]. Returns (loss, pred)."""
    S = {k: v.detach().numpy() for k, v in state.items()}
    x, m = images.detach().numpy(), mask.detach().numpy()
    B, Cin, Hs, Ws = x.shape
    p, C0 = cfg.patch_size, cfg.embed_dim
    g = Hs // p
    erf = np.vectorize(math.erf)

    def ln(t, pre):
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + LAYER_NORM_EPS) * S[pre + ".weight"] + S[pre + ".bias"]

    def lin(t, pre, bias=True):
        y = t @ S[pre + ".weight"].T
        return y + S[pre + ".bias"] if bias else y

    wp = S["encoder.patch_embed.proj.weight"].reshape(C0, Cin * p * p)
    t = np.zeros((B, g * g, C0))
    for b in range(B):
        for i in range(g):
            for j in range(g):
                patch = x[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)
                t[b, i * g + j] = wp @ patch + S["encoder.patch_embed.proj.bias"]
    t = ln(t, "encoder.patch_embed.norm")
    for b in range(B):
        for i in range(g):
            for j in range(g):
                if m[b, i, j] == 1:
                    t[b, i * g + j] = S["encoder.mask_token"][0, 0]
                else:
                    assert m[b, i, j] == 0

    res = g
    for st in range(len(cfg.depths)):
        C, nh = C0 * 2 ** st, cfg.num_heads[st]
        d = C // nh
        for blk in range(cfg.depths[st]):
            pre = f"encoder.layers.{st}.blocks.{blk}"
            if res <= cfg.window_size:
                ws, s = res, 0
            else:
                ws, s = cfg.window_size, (cfg.window_size // 2 if blk % 2 == 1 else 0)
            table = S[pre + ".attn.relative_position_bias_table"]
            qkv = lin(ln(t, pre + ".norm1"), pre + ".attn.qkv")           # (B, L, 3C)
            out = np.zeros((B, res * res, C))

            def region(r):
                if s == 0 or r < res - ws:
                    return 0
                return 1 if r < res - s else 2

            for b in range(B):
                for wr in range(res // ws):
                    for wc in range(res // ws):
                        idx, lab, hw = [], [], []
                        for r in range(ws):
                            for c in range(ws):
                                rr, cc = wr * ws + r, wc * ws + c          # rolled coordinates
                                idx.append(((rr + s) % res) * res + (cc + s) % res)
                                lab.append(3 * region(rr) + region(cc))
                                hw.append((r, c))
                        N = ws * ws
                        for hd in range(nh):
                            q = qkv[b, idx, hd * d:(hd + 1) * d]
                            k = qkv[b, idx, C + hd * d:C + (hd + 1) * d]
                            v = qkv[b, idx, 2 * C + hd * d:2 * C + (hd + 1) * d]
                            sc = (q @ k.T) / math.sqrt(d)
                            for a in range(N):
                                for e in range(N):
                                    (ha, wa), (he, we) = hw[a], hw[e]
                                    sc[a, e] += table[(ha - he + ws - 1) * (2 * ws - 1) + (wa - we + ws - 1), hd]
                                    if lab[a] != lab[e]:
                                        sc[a, e] += -100.0
                            ex = np.exp(sc - sc.max(-1, keepdims=True))
                            out[b, idx, hd * d:(hd + 1) * d] = (ex / ex.sum(-1, keepdims=True)) @ v
            t = t + lin(out, pre + ".attn.proj")
            u = lin(ln(t, pre + ".norm2"), pre + ".mlp.fc1")
            t = t + lin(0.5 * u * (1 + erf(u / math.sqrt(2))), pre + ".mlp.fc2")
        if st + 1 < len(cfg.depths):
            half = res // 2
            merged = np.zeros((B, half * half, 4 * C))
            for i in range(half):
                for j in range(half):
                    merged[:, i * half + j] = np.concatenate(
                        [t[:, (2 * i) * res + 2 * j], t[:, (2 * i + 1) * res + 2 * j],
                         t[:, (2 * i) * res + 2 * j + 1], t[:, (2 * i + 1) * res + 2 * j + 1]], -1)
            pre = f"encoder.layers.{st}.downsample"
            t = lin(ln(merged, pre + ".norm"), pre + ".reduction", bias=False)
            res = half
    t = ln(t, "encoder.norm")
    r = Hs // res
    wd = S["decoder.0.weight"][:, :, 0, 0]
    pred = np.zeros_like(x)
    for b in range(B):
        for i in range(res):
            for j in range(res):
                y = wd @ t[b, i * res + j] + S["decoder.0.bias"]
                for c in range(Cin):
                    for a in range(r):
                        for bb in range(r):
                            pred[b, c, i * r + a, j * r + bb] = y[c * r * r + a * r + bb]
    mpx = np.kron(m, np.ones((p, p)))[:, None]
    loss = (np.abs(x - pred) * mpx).sum() / (mpx.sum() + LOSS_EPS) / Cin
    return loss, pred


def check_numpy(cfg, model, images, mask, pred, loss, label):
    np_loss, np_pred = numpy_forward(cfg, model.state_dict(), images, mask)
    pr = pred.detach().double().numpy()
    diff = np.abs(pr - np_pred).max()
    assert diff <= 1e-11 * np.abs(pr).max(), f"{label}: numpy forward differs by {diff:.3e}"
    np.testing.assert_allclose(pr, np_pred, rtol=1e-11, atol=1e-13 * np.abs(pr).max(),
                               err_msg=f"{label}: torch vs independent numpy forward (pred)")
    assert abs(np_loss - loss) <= 1e-12 * abs(loss), f"{label}: numpy loss {np_loss!r} vs {loss!r}"
    print(f"  independent numpy forward agrees: max |pred diff| {diff:.1e} "
          f"(max |pred| {np.abs(pr).max():.2f}), |loss diff| {abs(np_loss - loss):.1e}")


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------
def common_metadata(name, cfg, mask_patch, coarse, nparams):
    return {
        "name": name,
        "config": cfg.to_json(),
        "img_size": str(cfg.img_size), "in_chans": str(cfg.in_chans),
        "patch_size": str(cfg.patch_size), "window_size": str(cfg.window_size),
        "embed_dim": str(cfg.embed_dim), "depths": json.dumps(cfg.depths),
        "num_heads": json.dumps(cfg.num_heads), "mlp_ratio": str(cfg.mlp_ratio),
        "stages": json.dumps([[cfg.stage_resolution(i), cfg.stage_window(i),
                               max(cfg.block_shift(i, j) for j in range(cfg.depths[i]))]
                              for i in range(cfg.num_stages)]),
        "decoder_stride": str(cfg.encoder_stride),
        "decoder_out_chans": str(cfg.encoder_stride ** 2 * cfg.in_chans),
        "num_params": str(nparams),
        "batch_size": str(BATCH),
        "mask_patch_size": str(mask_patch), "mask_ratio": repr(MASK_RATIO),
        "mask_coarse": json.dumps(coarse),
        "layer_norm_eps": repr(LAYER_NORM_EPS), "loss_eps": repr(LOSS_EPS),
        "attn_mask_value": repr(MASK_VALUE),
        "torch_version": torch.__version__, "numpy_version": np.__version__,
        "generator": "tests/pytorch/make_swin_fixture.py",
    }


def build_full(name, cfg: SwinConfig, mask_patch, coarse, weights):
    """swin_tiny (weights "official"): everything stored in full. swin_clamp (weights "hash"):
    splitmix64 weights (scale CLAMP_HASH_SCALE) not stored, only the buffers; the rest in full."""
    print(f"{name}: {cfg}")
    torch.manual_seed(SEED)
    if weights == "official":
        model = SimMIM(cfg).double()
        model.official_init(perturb_std=PERTURB_STD)
        images = torch.randn(BATCH, cfg.in_chans, cfg.img_size, cfg.img_size, dtype=torch.float64)
    elif weights == "hash":
        images = torch.randn(BATCH, cfg.in_chans, cfg.img_size, cfg.img_size, dtype=torch.float64)
        model = SimMIM(cfg).double()
        hash_init(model, scale=CLAMP_HASH_SCALE)
    else:
        raise ValueError(weights)
    mask = make_mask(cfg, mask_patch, coarse)
    check_structure(model)
    nparams = sum(p.numel() for p in model.parameters())

    x = images.clone().requires_grad_(True)
    loss, pred = model(x, mask)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    grad_images = x.grad.detach().clone()
    model.zero_grad(set_to_none=True)
    for n, gr in grads.items():
        assert gr.abs().max() > 0, f"{name}: gradient of {n} is identically zero"
    check_numpy(cfg, model, images, mask, pred, loss.item(), name)
    finite_difference_check(model, images.clone(), mask, grads, grad_images)

    model32 = copy.deepcopy(model).float()
    with torch.no_grad():
        loss32, pred32 = model32(images.float(), mask.float())

    tensors = {}
    param_names = {n for n, _ in model.named_parameters()}
    for n, t in model.state_dict().items():
        if weights == "official" or n not in param_names:
            tensors[n] = t.detach().clone()
    tensors["images"] = images
    tensors["mask"] = mask
    tensors["pred"] = pred.detach()
    tensors["loss"] = loss.detach().reshape(1)
    for n, gr in grads.items():
        tensors[f"grad.{n}"] = gr
    tensors["grad.images"] = grad_images
    tensors["pred32"] = pred32
    tensors["loss32"] = loss32.reshape(1)
    meta = common_metadata(name, cfg, mask_patch, coarse, nparams)
    if weights == "official":
        meta.update({
            "seed": str(SEED),
            "init": "torch.manual_seed(0); model built, .double(); official init (bias tables trunc_normal "
                    "std .02; Linear weight trunc_normal std .02, bias 0; LayerNorm 1/0; Conv2d PyTorch "
                    f"default; mask_token trunc_normal std .02), then N(0, {PERTURB_STD}) added to every "
                    "parameter; images = torch.randn(B, C, S, S) float64",
        })
    else:
        meta.update({
            "seed": str(SEED),
            "weights": hash_formula(CLAMP_HASH_SCALE, images=False),
            "images": "torch.manual_seed(0); torch.randn(B, C, S, S) float64 (stored)",
        })
    print(f"  parameters {nparams:,}; loss {loss.item():.17g}; loss32 {loss32.item():.9g}; "
          f"max |pred - pred32| {(pred.detach() - pred32.double()).abs().max().item():.1e}")
    return tensors, meta, model


def build_d32(name, cfg: SwinConfig, mask_patch, coarse):
    """swin_d32_ref: hash weights, summaries of the gradients."""
    print(f"{name}: {cfg}")
    model = SimMIM(cfg).double()
    hash_init(model)
    check_structure(model)
    images = hash_images(BATCH, cfg.in_chans, cfg.img_size)
    mask = make_mask(cfg, mask_patch, coarse)
    nparams = sum(p.numel() for p in model.parameters())
    loss, pred = model(images, mask)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    for n, gr in grads.items():
        assert gr.abs().max() > 0, f"{name}: gradient of {n} is identically zero"
    check_numpy(cfg, model, images, mask, pred, loss.item(), name)

    gen = torch.Generator().manual_seed(GRADIDX_SEED)
    sums, idxs, picks = {}, {}, {}
    for n, gr in grads.items():
        flat = gr.reshape(-1)
        assert flat.numel() >= 8
        top = int(flat.abs().argmax())
        perm = torch.randperm(flat.numel(), generator=gen).tolist()
        sel = [top] + [i for i in perm if i != top][:7]
        sums[n] = flat.abs().sum().reshape(1)
        idxs[n] = torch.tensor(sel, dtype=torch.int64)
        picks[n] = flat[idxs[n]].clone()
    # finite differences on the largest-|grad| entry of every parameter
    worst = 0.0
    with torch.no_grad():
        for n, prm in model.named_parameters():
            flat, i = prm.view(-1), int(idxs[n][0])
            saved = flat[i].item()
            flat[i] = saved + FD_H
            lp = model(images, mask)[0].item()
            flat[i] = saved - FD_H
            lm = model(images, mask)[0].item()
            flat[i] = saved
            ag, fd = picks[n][0].item(), (lp - lm) / (2 * FD_H)
            tol = 1e-10 + 1e-6 * abs(ag)
            worst = max(worst, abs(fd - ag) / tol)
            assert abs(fd - ag) <= tol, f"{name}: finite differences {n}[{i}] {ag!r} vs {fd!r}"
    print(f"  finite differences on the largest-|grad| entry of all {len(grads)} parameters agree "
          f"(worst {worst:.2f} of the tolerance)")

    tensors = {"images": images, "mask": mask, "pred": pred.detach().float(),
               "loss": loss.detach().reshape(1)}
    for n in grads:
        tensors[f"gradsum.{n}"] = sums[n]
    for n in grads:
        tensors[f"gradidx.{n}"] = idxs[n]
    for n in grads:
        tensors[f"gradpick.{n}"] = picks[n]
    meta = common_metadata(name, cfg, mask_patch, coarse, nparams)
    meta.update({
        "weights": HASH_FORMULA,
        "pred": "float64 model output cast to float32",
        "gradsum": "sum over the entries of |d loss / d param| (float64 run)",
        "gradidx": f"8 flat indices: argmax |grad|, then the first 7 other entries of "
                   f"torch.randperm(numel) from one torch.Generator seeded {GRADIDX_SEED}, "
                   "drawn parameter by parameter in state_dict order",
        "gradpick": "float64 d loss / d param at gradidx",
    })
    print(f"  parameters {nparams:,}; loss {loss.item():.17g}")
    return tensors, meta, model


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def verify_written(path, tensors, meta, model, mode: str) -> None:
    back, meta_back = load_safetensors(path)
    assert list(back) == list(tensors), "tensor names or order changed in the round trip"
    assert meta_back == meta, "metadata changed in the round trip"
    for n, t in tensors.items():
        b = back[n]
        assert b.dtype == t.dtype and b.shape == t.shape, f"{n}: dtype/shape changed"
        assert torch.equal(b, t.detach()), f"{n}: values changed in the round trip"
    if mode == "official":
        rebuilt, extras = load_swin_from_safetensors(path)
        assert rebuilt.cfg == model.cfg
        with torch.no_grad():
            loss, pred = rebuilt(extras["images"], extras["mask"])
        assert torch.equal(pred, back["pred"]) and torch.equal(loss.reshape(1), back["loss"]), \
            "model rebuilt from the file does not reproduce pred/loss"
    elif mode == "hash":
        cfg = SwinConfig.from_json(meta_back["config"])
        assert cfg == model.cfg
        rebuilt = SimMIM(cfg).double()
        hash_init(rebuilt, scale=CLAMP_HASH_SCALE)
        params = dict(rebuilt.named_parameters())
        assert not any(n in back for n in params), "hash fixture must not store parameter values"
        for n, t in rebuilt.state_dict().items():
            if n not in params:
                assert torch.equal(back[n], t), f"{n}: stored buffer differs from the model's"
        x = back["images"].clone().requires_grad_(True)
        loss, pred = rebuilt(x, back["mask"])
        loss.backward()
        assert torch.equal(pred.detach(), back["pred"]) and torch.equal(loss.detach().reshape(1), back["loss"]), \
            "hash-initialised model does not reproduce pred/loss"
        for n, prm in params.items():
            assert torch.equal(prm.grad, back[f"grad.{n}"]), f"grad.{n} not reproduced"
        assert torch.equal(x.grad, back["grad.images"]), "grad.images not reproduced"
        with torch.no_grad():
            loss32, pred32 = rebuilt.float()(back["images"].float(), back["mask"].float())
        assert torch.equal(pred32, back["pred32"]) and torch.equal(loss32.reshape(1), back["loss32"])
    else:
        cfg = SwinConfig.from_json(meta_back["config"])
        rebuilt = SimMIM(cfg).double()
        hash_init(rebuilt)
        assert torch.equal(hash_images(BATCH, cfg.in_chans, cfg.img_size), back["images"])
        with torch.no_grad():
            loss, pred = rebuilt(back["images"], back["mask"])
        assert torch.equal(pred.float(), back["pred"]) and torch.equal(loss.reshape(1), back["loss"]), \
            "hash-initialised model does not reproduce pred/loss"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help=f"default {DEFAULT_OUT_DIR}")
    args = parser.parse_args()
    torch.set_num_threads(1)  # reproducible reductions, byte-identical regeneration

    check_relative_position_index()
    check_hash()
    jobs = []
    for name, fname, cfg, mp, coarse, limit, weights in FIXTURES:
        tensors, meta, model = build_full(name, cfg, mp, coarse, weights)
        jobs.append((fname, tensors, meta, model, weights, limit))
    name, fname, cfg, mp, coarse, limit = D32
    tensors, meta, model = build_d32(name, cfg, mp, coarse)
    jobs.append((fname, tensors, meta, model, "d32", limit))

    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    temps = []
    try:
        for fname, tensors, meta, model, mode, limit in jobs:
            fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", suffix=".tmp", dir=out_dir)
            os.close(fd)
            temps.append(tmp)
            save_safetensors(tmp, tensors, meta)
            verify_written(tmp, tensors, meta, model, mode)
            size = os.path.getsize(tmp)
            assert size < limit, f"{fname}: {size} bytes, must stay < {limit}"
            os.chmod(tmp, 0o644)
        for (fname, *_), tmp in zip(jobs, temps):
            os.replace(tmp, os.path.join(out_dir, fname))
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)
    print("round trip: every file reloads bit-exactly and its model reproduces pred and loss")
    for fname, tensors, *_ in jobs:
        path = os.path.join(out_dir, fname)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        size = os.path.getsize(path)
        print(f"wrote {path}: {len(tensors)} tensors, {size} bytes ({size / 1024:.1f} KiB), "
              f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
