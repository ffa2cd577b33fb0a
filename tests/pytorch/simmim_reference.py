"""PyTorch reference for simmim: SimMIM with the common (timm) ViT, in plain torch.nn.

This module is the oracle the C++ tests are checked against (through the fixture written by
make_fixture.py). It holds:

* ``ViTConfig`` and the model ``SimMIM`` (``.encoder``: ``VisionTransformerForSimMIM``,
  ``.decoder``: ``nn.Sequential(nn.Conv2d(D, p*p*C, 1), nn.PixelShuffle(p))``), whose
  ``state_dict()`` keys are the official SimMIM / timm names (``encoder.blocks.0.attn.qkv.weight``...);
* a writer and a reader for the safetensors format (no ``safetensors`` package needed):
  ``save_safetensors`` / ``load_safetensors``;
* ``load_state_from_safetensors(path)``, which builds a model from a (C++-written or fixture)
  safetensors file with ``load_state_dict(strict=True)``.

Run with /usr/bin/python3 (torch 1.13, numpy). Nothing here is random except ``init_weights``,
which draws from torch's global generator (seed it with ``torch.manual_seed`` first).
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-6
LOSS_EPS = 1e-5


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViTConfig:
    img_size: int = 16      # square input, H = W
    patch_size: int = 4     # p: model patch (token) size, also the PixelShuffle factor
    in_chans: int = 3       # C
    embed_dim: int = 32     # D
    depth: int = 2          # number of transformer blocks
    num_heads: int = 2      # heads; head_dim = D / heads
    mlp_ratio: int = 4      # MLP hidden = mlp_ratio * D

    def __post_init__(self):
        if self.img_size % self.patch_size != 0:
            raise ValueError(f"ViTConfig: img_size {self.img_size} must be a multiple of "
                             f"patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(f"ViTConfig: embed_dim {self.embed_dim} must be a multiple of "
                             f"num_heads {self.num_heads}")

    @property
    def grid(self) -> int:          # h = w = H / p
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:   # L
        return self.grid * self.grid

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_ratio * self.embed_dim

    def to_metadata(self) -> Dict[str, str]:
        return {
            "img_size": str(self.img_size),
            "patch_size": str(self.patch_size),
            "in_chans": str(self.in_chans),
            "embed_dim": str(self.embed_dim),
            "depth": str(self.depth),
            "num_heads": str(self.num_heads),
            "mlp_ratio": str(self.mlp_ratio),
            "mlp_hidden": str(self.mlp_hidden),
            "layer_norm_eps": repr(LAYER_NORM_EPS),
        }


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size,
                              stride=cfg.patch_size)

    def forward(self, x):                              # x: (B, C, H, W)
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, L, D)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.scale = cfg.head_dim ** -0.5
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=True)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=True)

    def forward(self, x):                               # x: (B, N, D)
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)                 # (3, B, heads, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale   # (B, heads, N, N)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.embed_dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class VisionTransformerForSimMIM(nn.Module):
    """timm-style ViT encoder with SimMIM mask-token substitution; returns a (B, D, h, w) map."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, D))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)

    def forward(self, x, mask):                          # x: (B, C, H, W), mask: (B, h, w), 1 = masked
        t = self.patch_embed(x)                          # (B, L, D)
        B, L, _ = t.shape
        w = mask.flatten(1).unsqueeze(-1).type_as(t)     # (B, L, 1)
        t = t * (1 - w) + self.mask_token.expand(B, L, -1) * w
        t = torch.cat((self.cls_token.expand(B, -1, -1), t), dim=1) + self.pos_embed  # (B, L+1, D)
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)
        h, wd = x.shape[2] // self.cfg.patch_size, x.shape[3] // self.cfg.patch_size
        return t[:, 1:].transpose(1, 2).reshape(B, -1, h, wd)  # (B, D, h, w)


class SimMIM(nn.Module):
    """Encoder + linear (1x1 conv + PixelShuffle) head + masked L1 loss.

    ``forward(x, mask)`` returns ``(loss, x_rec)``: loss is a 0-dim tensor,
    x_rec has the shape of x (B, C, H, W).
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        p, C = cfg.patch_size, cfg.in_chans
        self.encoder = VisionTransformerForSimMIM(cfg)
        self.decoder = nn.Sequential(nn.Conv2d(cfg.embed_dim, p * p * C, kernel_size=1),
                                     nn.PixelShuffle(p))

    def forward(self, x, mask):
        p, C = self.cfg.patch_size, self.cfg.in_chans
        z = self.encoder(x, mask)                       # (B, D, h, w)
        x_rec = self.decoder(z)                         # (B, C, H, W)
        mask_px = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)
        mask_px = mask_px.type_as(x)                    # (B, 1, H, W)
        loss = (torch.abs(x - x_rec) * mask_px).sum() / (mask_px.sum() + LOSS_EPS) / C
        return loss, x_rec

    @torch.no_grad()
    def init_weights(self, perturb_std: float = 0.05) -> None:
        """timm-like init (trunc_normal std 0.02 for Linear/Conv weights and the three tokens /
        embeddings, zero biases, LayerNorm 1/0), then every LayerNorm weight/bias and every bias
        gets N(0, perturb_std) noise added so that their gradients are non-trivial.
        Draws from torch's global generator, in module registration order."""
        enc = self.encoder
        for t in (enc.cls_token, enc.mask_token, enc.pos_embed):
            nn.init.trunc_normal_(t, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(torch.randn_like(m.weight) * perturb_std)
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)):
                m.bias.add_(torch.randn_like(m.bias) * perturb_std)


def no_weight_decay_names() -> Tuple[str, ...]:
    """Multi-dimensional parameters that are nevertheless exempt from weight decay."""
    return ("encoder.pos_embed", "encoder.cls_token", "encoder.mask_token")


def adamw_param_groups(model: nn.Module, weight_decay: float):
    """Two AdamW groups, the SimMIM recipe: decay = every parameter with ndim > 1 except
    pos_embed / cls_token / mask_token; no decay = the rest (1-D tensors, biases, those three)."""
    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        if prm.ndim > 1 and name not in no_weight_decay_names():
            decay.append(prm)
        else:
            no_decay.append(prm)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------------------
# safetensors (written by hand: 8-byte LE header length N, N bytes of JSON padded with spaces to a
# multiple of 8, then raw little-endian C-contiguous tensor bytes, offsets relative to data start)
# ----------------------------------------------------------------------------------------------
_DTYPE_TO_NUMPY = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_TORCH_TO_DTYPE = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def save_safetensors(path: str, tensors: Dict[str, torch.Tensor],
                     metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` in insertion order; ``metadata`` values must be strings."""
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if name == "__metadata__":
            raise ValueError("save_safetensors: '__metadata__' is reserved, not a tensor name")
        t = t.detach().cpu().contiguous()
        if t.dtype not in _TORCH_TO_DTYPE:
            raise ValueError(f"save_safetensors: tensor '{name}' has unsupported dtype {t.dtype}")
        dtype = _TORCH_TO_DTYPE[t.dtype]
        raw = t.numpy().astype(_DTYPE_TO_NUMPY[dtype], copy=False).tobytes(order="C")
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise ValueError(f"save_safetensors: metadata '{k}' must be a string, got {type(v)}")
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Read a safetensors file -> ({name: tensor} in file order, metadata). Validates the header:
    dtypes, shapes versus byte sizes, offsets contiguous from 0 and covering the data exactly."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: file is {len(buf)} bytes, expected at least the 8-byte header length")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > _MAX_HEADER_BYTES or 8 + n > len(buf):
        raise ValueError(f"{path}: header length {n} does not fit in a file of {len(buf)} bytes")
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(buf)[8 + n:]
    entries = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor '{name}': expected dtype, shape, data_offsets "
                             f"[begin, end], found {info!r}") from None
        if dtype not in _DTYPE_TO_NUMPY:
            raise ValueError(f"{path}: tensor '{name}': unsupported dtype {dtype!r}")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise ValueError(f"{path}: tensor '{name}': bad data_offsets {info['data_offsets']!r}")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"{path}: tensor '{name}': bad shape {shape!r}")
        expected = math.prod(shape) * _DTYPE_TO_NUMPY[dtype].itemsize
        if end - begin != expected:
            raise ValueError(f"{path}: tensor '{name}': shape {shape} {dtype} needs {expected} bytes, "
                             f"data_offsets {[begin, end]} span {end - begin}")
        entries.append((begin, end, name, dtype, shape))
    position = 0
    for begin, end, name, _, _ in sorted(entries):
        if begin != position:
            raise ValueError(f"{path}: tensor '{name}': data starts at {begin}, expected {position} "
                             f"(tensor data must be contiguous without gaps or overlaps)")
        position = end
    if position != len(data):
        raise ValueError(f"{path}: tensors cover {position} data bytes, file has {len(data)}")
    tensors = {}
    for name, info in header.items():  # file (header) order
        begin, end = info["data_offsets"]
        stored = _DTYPE_TO_NUMPY[info["dtype"]]
        arr = np.frombuffer(data[begin:end], dtype=stored).reshape(info["shape"])
        tensors[name] = torch.from_numpy(arr.astype(stored.newbyteorder("="), copy=True))
    return tensors, dict(metadata)


def load_state_from_safetensors(path: str, num_heads: Optional[int] = None,
                                ) -> Tuple[SimMIM, Dict[str, object]]:
    """Build a ``SimMIM`` from a safetensors file holding all parameters under their state-dict
    names, and load them with ``load_state_dict(strict=True)``.

    The architecture is inferred from the tensor shapes (D, C, p, depth, L, image size, MLP ratio);
    the number of heads is not visible in the shapes: it is taken from ``num_heads`` if given,
    else from the ``num_heads`` metadata entry. The model takes the dtype of the stored parameters
    (F64 or F32). Returns ``(model, extras)``: extras are the tensors whose names are not
    parameters (inputs, outputs, gradients, optimizer state...), plus the file metadata under
    the key ``"__metadata__"`` (a dict of strings)."""
    tensors, metadata = load_safetensors(path)

    def need(name):
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor '{name}' needed to infer the architecture")
        return tensors[name]

    proj_w = need("encoder.patch_embed.proj.weight")     # (D, C, p, p)
    pos = need("encoder.pos_embed")                       # (1, L+1, D)
    fc1 = need("encoder.blocks.0.mlp.fc1.weight")         # (hidden, D)
    if proj_w.ndim != 4 or proj_w.shape[2] != proj_w.shape[3]:
        raise ValueError(f"{path}: encoder.patch_embed.proj.weight: expected (D, C, p, p), "
                         f"found {tuple(proj_w.shape)}")
    D, C, p = proj_w.shape[0], proj_w.shape[1], proj_w.shape[2]
    L = pos.shape[1] - 1
    grid = math.isqrt(L)
    if pos.ndim != 3 or grid * grid != L:
        raise ValueError(f"{path}: encoder.pos_embed: expected (1, L+1, D) with L a square, "
                         f"found {tuple(pos.shape)}")
    depth = 0
    while f"encoder.blocks.{depth}.norm1.weight" in tensors:
        depth += 1
    if num_heads is None:
        if "num_heads" not in metadata:
            raise ValueError(f"{path}: metadata has no 'num_heads'; pass num_heads explicitly")
        num_heads = int(metadata["num_heads"])
    cfg = ViTConfig(img_size=grid * p, patch_size=p, in_chans=C, embed_dim=D, depth=depth,
                    num_heads=num_heads, mlp_ratio=fc1.shape[0] // D)
    if cfg.mlp_hidden != fc1.shape[0]:
        raise ValueError(f"{path}: encoder.blocks.0.mlp.fc1.weight: hidden {fc1.shape[0]} is not a "
                         f"multiple of D {D}")
    model = SimMIM(cfg).to(proj_w.dtype)
    names = set(model.state_dict().keys())
    state = {k: v for k, v in tensors.items() if k in names}
    model.load_state_dict(state, strict=True)  # raises on missing keys or shape mismatches
    extras: Dict[str, object] = {k: v for k, v in tensors.items() if k not in names}
    extras["__metadata__"] = metadata
    return model, extras
