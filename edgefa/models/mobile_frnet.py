"""Mobile-FRNet (shared/papers/mobile-frnet.md): MobileNetV2's layout with Res2Net-split depthwise
convs + SGE in every block, SE after every layer and an optional dual attention before pooling.
What the paper leaves open, the choices made here and the parameter / MAC comparison with its
Table 2: docs/papers.md#mobile-frnet.
"""
from __future__ import annotations

import torch
from torch import nn

from edgefa.models.base import FaceRegressor, register_model

# (t, c, n, s) per layer: the paper's table (= MobileNetV2)
FRNET_LAYERS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


def conv_bn_act(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class Res2NetDepthwise(nn.Module):
    """Depthwise 3x3 split into ``scale`` channel groups connected hierarchically (Res2Net, Gao et al.)."""

    def __init__(self, channels: int, stride: int, scale: int = 4):
        super().__init__()
        if channels % scale:
            raise ValueError(f"Res2NetDepthwise: {channels} channels do not split into {scale} groups")
        self.width, self.hierarchical = channels // scale, stride == 1
        self.convs = nn.ModuleList(nn.Conv2d(self.width, self.width, 3, stride, 1, groups=self.width, bias=False)
                                   for _ in range(scale))
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.width, dim=1)
        outs, prev = [], None
        for part, conv in zip(parts, self.convs):
            prev = conv(part if prev is None or not self.hierarchical else part + prev)
            outs.append(prev)
        return self.act(self.bn(torch.cat(outs, dim=1)))


class SpatialGroupEnhance(nn.Module):
    """SGE (Li, Hu & Yang 2019): per channel group, the similarity of each position to the group's
    mean feature, normalised over space, scaled/shifted per group and used as a sigmoid gate."""

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        self.groups = groups if channels % groups == 0 else 1
        self.weight = nn.Parameter(torch.zeros(1, self.groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, self.groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1:]
        xg = x.reshape(-1, c // self.groups, h, w)  # (B*G, C/G, H, W)
        sim = (xg * xg.mean((2, 3), keepdim=True)).sum(1, keepdim=True)  # (B*G, 1, H, W)
        sim = sim - sim.mean((2, 3), keepdim=True)
        sim = sim / (sim.pow(2).mean((2, 3), keepdim=True) + 1e-5).sqrt()
        gate = sim.reshape(-1, self.groups, h, w) * self.weight + self.bias
        return (xg * torch.sigmoid(gate.reshape(-1, 1, h, w))).reshape(-1, c, h, w)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, min_reduced: int = 4):
        super().__init__()
        reduced = max(min_reduced, channels // reduction)
        self.fc = nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(inplace=True), nn.Conv2d(reduced, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class MobileBlock(nn.Module):
    """Inverted residual: 1x1 expand -> Res2Net depthwise 3x3 -> 1x1 project (linear) -> SGE (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, scale: int = 4, sge_groups: int = 8):
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn_act(cin, hidden) if expand != 1 else nn.Identity()
        self.dw = Res2NetDepthwise(hidden, stride, scale)
        self.project = conv_bn_act(hidden, cout, act=False)
        self.sge = SpatialGroupEnhance(cout, sge_groups)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sge(self.project(self.dw(self.expand(x))))
        return x + y if self.residual else y


class DualAttention(nn.Module):
    """Channel attention (FC bottleneck on the pooled vector) then spatial attention (1x1 conv -> 1 map)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channel = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(channels // reduction, channels, 1))
        self.spatial = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.channel(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.spatial(x))


class MobileFRNet(FaceRegressor):
    def __init__(self, attention: bool = True, input_size: int = 120, num_params: int = 62, scale: int = 4,
                 se_reduction: int = 16, sge_groups: int = 8, drop_rate: float = 0.2):
        super().__init__()
        self.input_size, self.num_params = int(input_size), int(num_params)
        layers: list[nn.Module] = [conv_bn_act(3, STEM_CHANNELS, 3, 2)]
        cin = STEM_CHANNELS
        for t, c, n, s in FRNET_LAYERS:
            blocks = [MobileBlock(cin if i == 0 else c, c, s if i == 0 else 1, t, scale, sge_groups) for i in range(n)]
            layers.append(nn.Sequential(*blocks, SqueezeExcite(c, se_reduction)))
            cin = c
        layers.append(conv_bn_act(cin, HEAD_CHANNELS))
        self.features = nn.Sequential(*layers)
        self.attention = DualAttention(HEAD_CHANNELS) if attention else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(HEAD_CHANNELS, self.num_params)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # start near the parameter mean (zero in whitened space), as the other regressors do
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.attention(self.features(x))
        return self.fc(self.drop(feats.mean((2, 3))))


def _build(**cfg) -> MobileFRNet:
    return MobileFRNet(**cfg)


register_model("mobile_frnet", _build, family="mobile_frnet", attention=True)
register_model("mobile_frnet_noattn", _build, family="mobile_frnet", attention=False)
