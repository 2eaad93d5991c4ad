"""timm backbones with a 62-parameter regression head (random init, nothing downloaded)."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.models.mobilevit import LinearSelfAttention
from torch import nn

from edgefa.models.base import FaceRegressor, register_model

# name -> default input size; MobileViT wants multiples of 64 (at 120 it silently resizes)
TIMM_BACKBONES = {
    "mobilenetv2_100": 120,
    "mobilenetv3_small_100": 120,
    "mobilenetv3_large_100": 120,
    "mobilevit_xxs": 128,
    "mobilevit_xs": 128,
    "mobilevit_s": 128,
    "mobilevitv2_050": 128,
    "mobilevitv2_075": 128,
    "mobilevitv2_100": 128,
    "resnet18": 120,
    "resnet50": 120,
}


class BroadcastLinearSelfAttention(LinearSelfAttention):
    """timm's MobileViT v2 ``LinearSelfAttention`` with ``context_vector.expand_as(value)`` written
    as plain broadcasting: the same numbers bit for bit, but litert-torch can convert it (the
    expand makes it emit a ``tfl.mul`` with non-broadcast-compatible shapes and fail). Only the
    self-attention path changes; cross-attention (``x_prev``) is never used by MobileViT v2."""

    def _forward_self_attn(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv_proj(x).split([1, self.embed_dim, self.embed_dim], dim=1)
        context_scores = self.attn_drop(F.softmax(query, dim=-1))  # softmax over the N patches
        context_vector = (key * context_scores).sum(dim=-1, keepdim=True)  # [B, d, P, 1]
        out = F.relu(value) * context_vector  # broadcasts over N, no expand_as
        return self.out_drop(self.out_proj(out))


def broadcast_linear_attention(module: nn.Module) -> nn.Module:
    """Swap (in place) every timm ``LinearSelfAttention`` under ``module`` to the broadcasting
    subclass above: class swap only, so weights, ``state_dict`` keys and checkpoints are unchanged."""
    for sub in module.modules():
        if type(sub) is LinearSelfAttention:
            sub.__class__ = BroadcastLinearSelfAttention
    return module


class TimmRegressor(FaceRegressor):
    def __init__(self, backbone: str, input_size: int = 120, num_params: int = 62, drop_rate: float = 0.0):
        super().__init__()
        self.backbone_name = backbone
        self.input_size = int(input_size)
        self.num_params = int(num_params)
        # pretrained=False: edgefa never downloads weights at run time
        self.net = timm.create_model(backbone, pretrained=False, num_classes=num_params, drop_rate=drop_rate)
        broadcast_linear_attention(self.net)  # MobileViT v2: exportable to TFLite, same outputs
        head = self.net.get_classifier()
        if isinstance(head, nn.Linear):
            # start near the parameter mean (zero in whitened space) so early losses are sane
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _builder(backbone: str):
    def build(**cfg) -> TimmRegressor:
        return TimmRegressor(backbone, **cfg)

    return build


for _name, _size in TIMM_BACKBONES.items():
    register_model(_name, _builder(_name), family="timm", input_size=_size)
