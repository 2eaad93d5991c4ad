"""3DDFA-V2's MobileNet-V1 (the peer), so its checkpoint runs through edgefa's own code.

Layer names follow 3DDFA-V2's ``models/mobilenet_v1.py`` so its state dict loads as is.
"""
from __future__ import annotations

import torch
from torch import nn

from edgefa.models.base import FaceRegressor, register_model


class DepthWiseBlock(nn.Module):
    def __init__(self, inplanes: float, planes: float, stride: int = 1):
        super().__init__()
        inplanes, planes = int(inplanes), int(planes)
        self.conv_dw = nn.Conv2d(inplanes, inplanes, 3, stride=stride, padding=1, groups=inplanes, bias=False)
        self.bn_dw = nn.BatchNorm2d(inplanes)
        self.conv_sep = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(FaceRegressor):
    # (name, in, out, stride) in units of widen_factor
    _BLOCKS = [("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2), ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
               ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2)] + \
              [(f"dw5_{i}", 512, 512, 1) for i in range(1, 6)] + [("dw5_6", 512, 1024, 2), ("dw6", 1024, 1024, 1)]

    def __init__(self, widen_factor: float = 0.5, num_params: int = 62, input_size: int = 120):
        super().__init__()
        self.input_size = int(input_size)
        self.num_params = int(num_params)
        w = widen_factor
        self.conv1 = nn.Conv2d(3, int(32 * w), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(int(32 * w))
        self.relu = nn.ReLU(inplace=True)
        for name, cin, cout, stride in self._BLOCKS:
            setattr(self, name, DepthWiseBlock(cin * w, cout * w, stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc_param = nn.Linear(int(1024 * w), num_params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in self._BLOCKS:
            x = getattr(self, name)(x)
        return self.fc_param(torch.flatten(self.avgpool(x), 1))


def _build(**cfg) -> MobileNetV1:
    return MobileNetV1(**cfg)


register_model("mobilenet_v1_3ddfa", _build, family="3ddfa", widen_factor=0.5)
