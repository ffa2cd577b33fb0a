"""PyTorch reference of SimMIM with the official (BEiT-derived) ViT encoder, in plain torch.nn.

Written after microsoft/SimMIM models/vision_transformer.py (VisionTransformer, Block, Attention,
RelativePositionBias, PatchEmbed, Mlp), models/simmim.py (VisionTransformerForSimMIM, SimMIM) and
optimizer.py (get_pretrain_param_groups), with the pretraining configuration of
configs/vit_base__800ep/simmim_pretrain__vit_base__img224__800ep.yaml and config.py:
QKV_BIAS True, INIT_VALUES 0.1, USE_APE False, USE_RPB False, USE_SHARED_RPB True,
USE_MEAN_POOLING False, norm_layer = partial(nn.LayerNorm, eps=1e-6), drop_rate 0, attn_drop 0.
No timm: DropPath and trunc_normal_ (torch.nn.init.trunc_normal_, the same algorithm) are inlined.
Only the pieces the SimMIM pretraining path uses are kept (no classifier head, no per-block
relative position tables, no absolute position embedding, no mean pooling).

``state_dict()`` names and order are the official ones:
encoder.cls_token, encoder.mask_token, encoder.patch_embed.proj.weight|bias,
encoder.rel_pos_bias.relative_position_bias_table (+ the buffer encoder.rel_pos_bias.
relative_position_index), encoder.blocks.{i}.gamma_1|gamma_2|norm1.*|attn.q_bias|attn.v_bias|
attn.qkv.weight|attn.proj.*|norm2.*|mlp.fc1.*|mlp.fc2.*, encoder.norm.*, decoder.0.weight|bias.

Run with /usr/bin/python3 (torch 1.13).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-6
LOSS_EPS = 1e-5
INIT_VALUES = 0.1


@dataclass(frozen=True)
class OfficialViTConfig:
    img_size: int = 16
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 24
    depth: int = 2
    num_heads: int = 3
    mlp_ratio: int = 4
    drop_path_rate: float = 0.0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def to_metadata(self) -> Dict[str, str]:
        return {k: str(getattr(self, k)) for k in ("img_size", "patch_size", "in_chans", "embed_dim", "depth",
                                                   "num_heads", "mlp_ratio", "drop_path_rate")}


def drop_path(x, drop_prob: float = 0.0, training: bool = False):
    """timm's drop_path (scale_by_keep=True): per-sample keep with probability 1 - drop_prob."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()            # exact erf form
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """qkv Linear without bias, separate q_bias and v_bias (k has none); the shared relative position
    bias comes in as rel_pos_bias (heads, N, N) and is added to the scores before softmax."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rel_pos_bias=None):
        B, N, C = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(input=x, weight=self.qkv.weight, bias=qkv_bias)
        qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        if rel_pos_bias is not None:
            attn = attn + rel_pos_bias
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, drop_path_rate, init_values):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(init_values * torch.ones((dim)), requires_grad=True)
        self.gamma_2 = nn.Parameter(init_values * torch.ones((dim)), requires_grad=True)

    def forward(self, x, rel_pos_bias=None):
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x), rel_pos_bias=rel_pos_bias))
        x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        return x


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.patch_shape = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.patch_shape[0] * self.patch_shape[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def relative_position_index(window_size: Tuple[int, int]) -> torch.Tensor:
    """BEiT's relative_position_index, (Wh*Ww + 1, Wh*Ww + 1), exactly as RelativePositionBias builds it."""
    num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
    coords_h = torch.arange(window_size[0])
    coords_w = torch.arange(window_size[1])
    coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing="ij"))  # 2, Wh, Ww
    coords_flatten = torch.flatten(coords, 1)  # 2, Wh*Ww
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, Wh*Ww, Wh*Ww
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()  # Wh*Ww, Wh*Ww, 2
    relative_coords[:, :, 0] += window_size[0] - 1
    relative_coords[:, :, 1] += window_size[1] - 1
    relative_coords[:, :, 0] *= 2 * window_size[1] - 1
    index = torch.zeros(size=(window_size[0] * window_size[1] + 1,) * 2, dtype=relative_coords.dtype)
    index[1:, 1:] = relative_coords.sum(-1)
    index[0, 0:] = num_relative_distance - 3
    index[0:, 0] = num_relative_distance - 2
    index[0, 0] = num_relative_distance - 1
    return index


class RelativePositionBias(nn.Module):
    def __init__(self, window_size, num_heads):
        super().__init__()
        self.window_size = window_size
        self.num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(self.num_relative_distance, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))

    def forward(self):
        n = self.window_size[0] * self.window_size[1] + 1
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous()  # nH, N, N


class VisionTransformerForSimMIM(nn.Module):
    """VisionTransformer(num_classes=0, use_abs_pos_emb=False, use_shared_rel_pos_bias=True,
    use_mean_pooling=False, qkv_bias=True, init_values=0.1) + mask_token, as the official subclass."""

    def __init__(self, cfg: OfficialViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.num_features = self.embed_dim = D
        self.patch_size = cfg.patch_size
        self.in_chans = cfg.in_chans
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = None
        self.rel_pos_bias = RelativePositionBias(window_size=self.patch_embed.patch_shape, num_heads=cfg.num_heads)
        dpr = [x.item() for x in torch.linspace(0, cfg.drop_path_rate, cfg.depth)]
        self.blocks = nn.ModuleList([Block(D, cfg.num_heads, cfg.mlp_ratio, dpr[i], INIT_VALUES)
                                     for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))

    def forward(self, x, mask):
        x = self.patch_embed(x)
        B, L, _ = x.shape
        mask_token = self.mask_token.expand(B, L, -1)
        w = mask.flatten(1).unsqueeze(-1).type_as(mask_token)
        x = x * (1 - w) + mask_token * w
        cls_tokens = self.cls_token.expand(B, -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        rel_pos_bias = self.rel_pos_bias()
        for blk in self.blocks:
            x = blk(x, rel_pos_bias=rel_pos_bias)
        x = self.norm(x)
        x = x[:, 1:]
        B, L, C = x.shape
        H = W = int(L ** 0.5)
        return x.permute(0, 2, 1).reshape(B, C, H, W)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}


def _trunc_normal_std_(tensor, std=0.02):
    """The official VisionTransformerForSimMIM._trunc_normal_: cut at +-std (a = -std, b = std)."""
    nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-std, b=std)


class SimMIM(nn.Module):
    """Encoder + Conv2d(D, p*p*C, 1) + PixelShuffle(p) head + masked L1 loss; forward -> (loss, x_rec)."""

    def __init__(self, cfg: OfficialViTConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VisionTransformerForSimMIM(cfg)
        self.encoder_stride = cfg.patch_size
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, self.encoder_stride ** 2 * cfg.in_chans, kernel_size=1),
            nn.PixelShuffle(self.encoder_stride))
        self.in_chans = cfg.in_chans
        self.patch_size = cfg.patch_size

    def forward(self, x, mask):
        z = self.encoder(x, mask)
        x_rec = self.decoder(z)
        mask = mask.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2).unsqueeze(1).contiguous()
        loss_recon = F.l1_loss(x, x_rec, reduction="none")
        loss = (loss_recon * mask).sum() / (mask.sum() + LOSS_EPS) / self.in_chans
        return loss, x_rec

    @torch.no_grad()
    def official_init(self) -> None:
        """The official encoder init, in its order: cls_token, then self.apply(_init_weights) (Linear
        and Conv2d weights trunc-normal +-std, their biases 0, LayerNorm 1/0), fix_init_weight
        (attn.proj.weight and mlp.fc2.weight of block i divided by sqrt(2 (i + 1))), then mask_token.
        gamma (0.1), q_bias / v_bias (0) and the table (0) keep their construction values. The
        decoder keeps PyTorch's default Conv2d init, as in the official code."""
        enc = self.encoder
        _trunc_normal_std_(enc.cls_token)
        for m in enc.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                _trunc_normal_std_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)
        for layer_id, layer in enumerate(enc.blocks):
            layer.attn.proj.weight.div_(math.sqrt(2.0 * (layer_id + 1)))
            layer.mlp.fc2.weight.div_(math.sqrt(2.0 * (layer_id + 1)))
        _trunc_normal_std_(enc.mask_token)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"encoder." + i for i in self.encoder.no_weight_decay()}


def pretrain_param_groups(model: nn.Module) -> Tuple[List[str], List[str]]:
    """optimizer.get_pretrain_param_groups: (decay names, no-decay names). No decay for 1-D tensors,
    names ending in .bias and model.no_weight_decay() (the ViT has no skip keywords)."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if len(param.shape) == 1 or name.endswith(".bias") or name in skip:
            no_decay.append(name)
        else:
            decay.append(name)
    return decay, no_decay
