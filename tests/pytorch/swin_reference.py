"""PyTorch reference for simmim: SimMIM with the Swin Transformer encoder, in plain torch.nn.

Written from the official code (microsoft/SimMIM
``models/simmim.py`` + ``models/swin_transformer.py``, no timm), as the oracle the C++ Swin encoder
is checked against (through the fixtures written by make_swin_fixture.py). It holds:

* ``SwinConfig`` and the model ``SimMIM`` (``.encoder``: ``SwinTransformerForSimMIM``,
  ``.decoder``: ``nn.Sequential(nn.Conv2d(num_features, stride**2 * in_chans, 1),
  nn.PixelShuffle(stride))`` with ``stride = patch * 2**(stages - 1)``), whose ``state_dict()``
  keys, order and buffers are the official ones (``encoder.mask_token``,
  ``encoder.layers.0.blocks.1.attn_mask``, ``encoder.layers.0.blocks.0.attn.qkv.weight``...);
* ``SimMIM.official_init`` (the official init, optionally followed by N(0, std) noise on every
  parameter) and ``hash_init`` / ``hash_formula`` (the splitmix64 weights a C++ program can reproduce exactly);
* ``relative_position_index`` and ``shifted_window_attn_mask`` (the two buffers, as functions);
* ``load_swin_from_safetensors(path)``: builds the model from a safetensors file whose metadata
  holds the configuration (``config``, JSON) and loads it with ``load_state_dict``.

Differences from the official code, on purpose: the decoder has ``stride**2 * in_chans`` output
channels (as HF does) instead of the hard-coded ``stride**2 * 3``; no dropout / drop path / absolute
position embedding (all off in SimMIM pretraining); no classification head.

Run with /usr/bin/python3 (torch 1.13, numpy).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from simmim_reference import load_safetensors

LAYER_NORM_EPS = 1e-5   # nn.LayerNorm default, as in the official Swin (the SimMIM ViT uses 1e-6)
LOSS_EPS = 1e-5
MASK_VALUE = -100.0     # value of the shifted-window attention mask for pairs across regions


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass
class SwinConfig:
    img_size: int = 16                 # square input, H = W
    in_chans: int = 3
    patch_size: int = 2                # model patch
    window_size: int = 4               # before the clamp rule
    embed_dim: int = 16                # C of stage 0
    depths: List[int] = field(default_factory=lambda: [2, 2])
    num_heads: List[int] = field(default_factory=lambda: [2, 4])
    mlp_ratio: int = 4

    def __post_init__(self):
        self.depths = [int(d) for d in self.depths]
        self.num_heads = [int(h) for h in self.num_heads]
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"SwinConfig: depths {self.depths} and num_heads {self.num_heads} "
                             "must be non-empty and of the same length")
        if self.img_size % self.patch_size != 0:
            raise ValueError(f"SwinConfig: img_size {self.img_size} % patch_size {self.patch_size} != 0")
        for i in range(self.num_stages):
            res, win = self.stage_resolution(i), self.stage_window(i)
            if i + 1 < self.num_stages and res % 2 != 0:
                raise ValueError(f"SwinConfig: stage {i} resolution {res} must be even (PatchMerging)")
            if res % win != 0:
                raise ValueError(f"SwinConfig: stage {i} resolution {res} % window {win} != 0")
            if self.stage_dim(i) % self.num_heads[i] != 0:
                raise ValueError(f"SwinConfig: stage {i} dim {self.stage_dim(i)} % heads "
                                 f"{self.num_heads[i]} != 0")

    @property
    def grid(self) -> int:              # model-patch grid g = S / patch
        return self.img_size // self.patch_size

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_features(self) -> int:      # C * 2^(stages-1)
        return self.embed_dim * 2 ** (self.num_stages - 1)

    @property
    def encoder_stride(self) -> int:    # patch * 2^(stages-1): the PixelShuffle factor
        return self.patch_size * 2 ** (self.num_stages - 1)

    @property
    def out_grid(self) -> int:          # o = S / stride
        return self.grid // 2 ** (self.num_stages - 1)

    def stage_dim(self, i: int) -> int:
        return self.embed_dim * 2 ** i

    def stage_resolution(self, i: int) -> int:
        return self.grid // 2 ** i

    def stage_window(self, i: int) -> int:
        """The clamp rule: if resolution <= window, the window becomes the resolution."""
        res = self.stage_resolution(i)
        return res if res <= self.window_size else self.window_size

    def block_shift(self, i: int, j: int) -> int:
        """0 for even blocks, window // 2 for odd ones; 0 in a clamped stage."""
        if self.stage_resolution(i) <= self.window_size:
            return 0
        return 0 if j % 2 == 0 else self.window_size // 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> "SwinConfig":
        return SwinConfig(**json.loads(text))


# ----------------------------------------------------------------------------------------------
# Buffers and window helpers
# ----------------------------------------------------------------------------------------------
def relative_position_index(ws: int) -> torch.Tensor:
    """(ws^2, ws^2) int64: idx[i, j] = (h_i - h_j + ws - 1) * (2 ws - 1) + (w_i - w_j + ws - 1),
    token n = h * ws + w inside the window."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = coords.flatten(1)                                   # (2, N)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # (N, N, 2)
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws, ws, C); window index b * nW + wr * (W / ws) + wc."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.contiguous().view(-1, ws, ws, C)


def window_reverse(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C), the inverse of window_partition."""
    B = windows.shape[0] // ((H // ws) * (W // ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.contiguous().view(B, H, W, -1)


def shifted_window_attn_mask(res: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws^2, ws^2) float32 (the module dtype follows .double()): 0 where the two tokens of a
    window come from the same region of the rolled image, -100 elsewhere. Regions: labels 0..8 over
    the h and w slices [0, res-ws), [res-ws, res-shift), [res-shift, res)."""
    img = torch.zeros(1, res, res, 1)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for wsl in cuts:
            img[:, hs, wsl, :] = label
            label += 1
    lab = window_partition(img, ws).view(-1, ws * ws)           # (nW, N)
    mask = lab.unsqueeze(1) - lab.unsqueeze(2)                  # [w, i, j] = lab[j] - lab[i]
    return mask.masked_fill(mask != 0, MASK_VALUE).masked_fill(mask == 0, 0.0)


# ----------------------------------------------------------------------------------------------
# Modules (registration order = official state-dict order)
# ----------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.img_size = cfg.img_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size,
                              stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=LAYER_NORM_EPS)

    def forward(self, x):                                   # (B, Cin, S, S) -> (B, L, C)
        if x.shape[2] != self.img_size or x.shape[3] != self.img_size:
            raise ValueError(f"PatchEmbed: input {tuple(x.shape)} does not match img_size {self.img_size}")
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, num_heads: int):
        super().__init__()
        self.ws, self.num_heads = ws, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask: Optional[torch.Tensor] = None):   # x: (B_, N, C)
        B_, N, C = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(B_, N, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                         # (B_, nH, N, d)
        q = q * self.scale                                       # scale before q @ k^T
        attn = q @ k.transpose(-2, -1)                           # (B_, nH, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(N, N, nh).permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, nh, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, nh, N, N)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B_, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))                     # exact (erf) GELU


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, res: int, ws: int, shift: int, num_heads: int, mlp_ratio: int):
        super().__init__()
        if res <= ws:                                           # the clamp rule
            ws, shift = res, 0
        assert 0 <= shift < ws
        self.dim, self.res, self.ws, self.shift = dim, res, ws, shift
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.register_buffer("attn_mask",
                             shifted_window_attn_mask(res, ws, shift) if shift > 0 else None)

    def forward(self, x):                                       # (B, L, C)
        B, L, C = x.shape
        H = W = self.res
        assert L == H * W, f"block: {L} tokens for resolution {H}"
        ws, s = self.ws, self.shift
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        win = window_partition(x, ws).view(-1, ws * ws, C)
        win = self.attn(win, mask=self.attn_mask).view(-1, ws, ws, C)
        x = window_reverse(win, ws, H, W)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = shortcut + x.reshape(B, H * W, C)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, res: int):
        super().__init__()
        self.res = res
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=LAYER_NORM_EPS)

    def forward(self, x):                                       # (B, H*W, C) -> (B, H*W/4, 2C)
        B, L, C = x.shape
        H = W = self.res
        x = x.view(B, H, W, C)
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], -1).view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    def __init__(self, cfg: SwinConfig, i: int):
        super().__init__()
        dim, res = cfg.stage_dim(i), cfg.stage_resolution(i)
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, res, cfg.window_size,
                                 0 if j % 2 == 0 else cfg.window_size // 2,
                                 cfg.num_heads[i], cfg.mlp_ratio)
            for j in range(cfg.depths[i])])
        self.downsample = PatchMerging(dim, res) if i + 1 < cfg.num_stages else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class SwinTransformerForSimMIM(nn.Module):
    """Swin encoder with SimMIM mask-token substitution; returns the (B, num_features, o, o) map."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.ModuleList([BasicLayer(cfg, i) for i in range(cfg.num_stages)])
        self.norm = nn.LayerNorm(cfg.num_features, eps=LAYER_NORM_EPS)
        # a direct parameter of the encoder: first in its state_dict, as officially
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))

    def forward(self, x, mask):                                  # mask: (B, g, g), 1 = masked
        x = self.patch_embed(x)                                  # (B, L, C), after the LayerNorm
        B, L, _ = x.shape
        w = mask.flatten(1).unsqueeze(-1).type_as(self.mask_token)
        x = x * (1 - w) + self.mask_token.expand(B, L, -1) * w
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        x = x.transpose(1, 2)
        B, C, L = x.shape
        H = W = int(L ** 0.5)
        return x.reshape(B, C, H, W)


class SimMIM(nn.Module):
    """``forward(x, mask) -> (loss, x_rec)``: loss 0-dim, x_rec (B, in_chans, S, S)."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        r = cfg.encoder_stride
        self.encoder = SwinTransformerForSimMIM(cfg)
        self.decoder = nn.Sequential(nn.Conv2d(cfg.num_features, r * r * cfg.in_chans, kernel_size=1),
                                     nn.PixelShuffle(r))

    def forward(self, x, mask):
        p, C = self.cfg.patch_size, self.cfg.in_chans
        x_rec = self.decoder(self.encoder(x, mask))
        m = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).contiguous()
        m = m.type_as(x)
        loss = (F.l1_loss(x, x_rec, reduction="none") * m).sum() / (m.sum() + LOSS_EPS) / C
        return loss, x_rec

    @torch.no_grad()
    def official_init(self, perturb_std: float = 0.0) -> None:
        """The official init, drawing from torch's global generator in this order: every
        relative_position_bias_table trunc_normal(std .02) (module order); every Linear weight
        trunc_normal(std .02) with zero bias, LayerNorm 1/0 (module order); Conv2d keep PyTorch's
        default (kaiming_uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))), re-drawn here in module
        order; mask_token trunc_normal(std .02). trunc_normal cut-offs are the absolute -2, 2.
        Then, if perturb_std > 0, N(0, perturb_std) noise is added to every parameter in
        named_parameters() order."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                m.reset_parameters()
        nn.init.trunc_normal_(self.encoder.mask_token, std=0.02)
        if perturb_std > 0:
            for _, prm in self.named_parameters():
                prm.add_(torch.randn_like(prm) * perturb_std)


def no_weight_decay_names(model: nn.Module) -> List[str]:
    """Official pretraining groups (SM optimizer.py): no decay if ndim == 1, name ends in '.bias',
    or name is 'encoder.mask_token'. The bias tables ARE decayed in pretraining (the prefixed
    keyword 'encoder.relative_position_bias_table' matches none of them)."""
    return [n for n, p in model.named_parameters()
            if p.ndim == 1 or n.endswith(".bias") or n == "encoder.mask_token"]


# ----------------------------------------------------------------------------------------------
# Hash weights (reproducible in C++ without storing them)
# ----------------------------------------------------------------------------------------------
_SM_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SM_M1 = np.uint64(0xBF58476D1CE4E5B9)
_SM_M2 = np.uint64(0x94D049BB133111EB)
LAYER_NORM_WEIGHT_SUFFIXES = ("norm.weight", "norm1.weight", "norm2.weight")
HASH_SCALE = 0.02       # swin_d32_ref; swin_clamp uses 0.2 (larger gradients, non-uniform attention)


def hash_formula(scale: float = HASH_SCALE, images: bool = True) -> str:
    """The hash-weight sentence for the given scale of the non-LayerNorm-weight parameters
    (hash_formula() is HASH_FORMULA, the d32 text). images=False: the images are stored, not hashed."""
    other = f"{scale!r} v for every other parameter"
    if scale != HASH_SCALE:
        other += ", biases, LayerNorm biases, relative_position_bias_table and mask_token included"
    text = (
        "Parameters are walked in state_dict order (parameters only, no buffers), k = 0, 1, 2, ...; entry i "
        "(flat, row-major) of parameter k gets z = splitmix64(x) with x = ((k + 1) << 32) + i, where "
        "splitmix64(x): z = x + 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; "
        "z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31) (all uint64, mod 2^64); "
        "u = (z >> 11) * 2^-53 (double, in [0, 1)); v = 2u - 1; value = 1 + 0.1 v for LayerNorm weights "
        f"(names ending in norm.weight, norm1.weight or norm2.weight), {other} "
        "(each a separate double multiply and add, no FMA).")
    if images:
        text += (" Images: the same with k = 1000, i.e. "
                 "x = (1001 << 32) + i over the flat (B, C, S, S) index, value = v.")
    else:
        text += " The images are not hashed: they are stored in the file."
    return text


HASH_FORMULA = hash_formula()


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 output function on state x (uint64 array, wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _SM_GAMMA
    z = (z ^ (z >> np.uint64(30))) * _SM_M1
    z = (z ^ (z >> np.uint64(27))) * _SM_M2
    return z ^ (z >> np.uint64(31))


def splitmix64_int(x: int) -> int:
    """Pure-Python version (for cross-checking the numpy one)."""
    M = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def hash_uniform(k: int, n: int) -> np.ndarray:
    """v in [-1, 1) (float64) for entries i = 0..n-1 of stream k."""
    x = (np.uint64(k + 1) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
    u = (splitmix64(x) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return 2.0 * u - 1.0


@torch.no_grad()
def hash_init(model: nn.Module, scale: float = HASH_SCALE) -> None:
    """Set every parameter from hash_formula(scale) (float64 values, then cast to the parameter
    dtype): 1 + 0.1 v for LayerNorm weights, scale * v for all other parameters."""
    for k, (name, prm) in enumerate(model.named_parameters()):
        v = hash_uniform(k, prm.numel())
        if name.endswith(LAYER_NORM_WEIGHT_SUFFIXES):
            val = 1.0 + 0.1 * v
        else:
            val = scale * v
        prm.copy_(torch.from_numpy(val).view(prm.shape))


def hash_images(batch: int, chans: int, size: int) -> torch.Tensor:
    return torch.from_numpy(hash_uniform(1000, batch * chans * size * size)).view(batch, chans, size, size)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def load_swin_from_safetensors(path: str, cfg: Optional[SwinConfig] = None, dtype=None,
                               ) -> Tuple[SimMIM, Dict[str, object]]:
    """Build a Swin ``SimMIM`` from a safetensors file and load its parameters by name.

    The configuration comes from ``cfg`` or the ``config`` (JSON) metadata entry. Every parameter
    must be present with its shape (``load_state_dict(strict=True)`` on the parameters); the
    buffers (relative_position_index, attn_mask) are optional, but when present they must equal the
    ones the model computes. The model takes the dtype of the stored parameters unless ``dtype`` is
    given. Returns ``(model, extras)``: extras are the non-state tensors plus ``"__metadata__"``."""
    tensors, metadata = load_safetensors(path)
    if cfg is None:
        if "config" not in metadata:
            raise ValueError(f"{path}: no 'config' metadata entry; pass cfg explicitly")
        cfg = SwinConfig.from_json(metadata["config"])
    probe = "encoder.patch_embed.proj.weight"
    if probe not in tensors:
        raise ValueError(f"{path}: missing tensor '{probe}'")
    model = SimMIM(cfg).to(dtype or tensors[probe].dtype)
    state = model.state_dict()
    param_names = {n for n, _ in model.named_parameters()}
    for n, ref in state.items():
        if n in param_names or n not in tensors:
            continue
        t = tensors[n]
        if t.is_floating_point() != ref.is_floating_point() or not torch.equal(t.to(ref.dtype), ref):
            raise ValueError(f"{path}: buffer '{n}' differs from the one the model computes")
    load = {n: tensors[n].to(state[n].dtype) if n in param_names else state[n]
            for n in state if n in tensors or n not in param_names}
    model.load_state_dict(load, strict=True)  # raises on missing parameters or shape mismatches
    extras: Dict[str, object] = {k: v for k, v in tensors.items() if k not in state}
    extras["__metadata__"] = metadata
    return model, extras
