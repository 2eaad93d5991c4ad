"""Multi-task 3DMM regressor of Kim, Lee & Sohn (JIITA 2023): a backbone, one MBConv + SE head per task
(pose 12, shape 40, expression 10); landmarks and head pose follow from the parameters. Head widths
recovered from the paper's Table I: docs/papers.md#multitask.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from edgefa.models.base import FaceRegressor, register_model
from edgefa.models.timm_backbones import broadcast_linear_attention

TASK_DIMS = {"pose": 12, "shape": 40, "expression": 10}  # concatenated in this order = the 62 params
N_LANDMARKS = 68

# registry name -> (timm backbone, default input size); MobileViT wants multiples of 64
MULTITASK_BACKBONES = {
    "multitask_mobilevit_s": ("mobilevit_s", 128),
    "multitask_mobilevitv2_100": ("mobilevitv2_100", 128),
    "multitask_mobilenetv3_small_100": ("mobilenetv3_small_100", 120),
}


def conv_bn(cin: int, cout: int, kernel: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.SiLU):
    layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> BN/act -> dw 3x3 -> BN/act -> SE -> 1x1 project -> BN (linear)."""

    def __init__(self, cin: int, cout: int, expand: float = 1.0, se_ratio: float = 0.25,
                 act: type[nn.Module] = nn.SiLU):
        super().__init__()
        mid = max(1, round(cin * expand))
        self.expand = conv_bn(cin, mid, 1, act=act)
        self.dw = conv_bn(mid, mid, 3, groups=mid, act=act)
        self.se = SqueezeExcite(mid, max(1, round(mid * se_ratio)), act)
        self.project = conv_bn(mid, cout, 1, act=None)
        self.residual = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class TaskHead(nn.Module):
    """Sec. 2 multi-head branch: MBConv(C->wC), MBConv(wC->C), 1x1 conv(C->C), global pool, Linear(C->k)."""

    def __init__(self, channels: int, out_dim: int, width: float = 4.0, drop_rate: float = 0.0,
                 act: type[nn.Module] = nn.SiLU):
        super().__init__()
        hidden = max(1, round(channels * width))
        self.blocks = nn.Sequential(MBConv(channels, hidden, act=act), MBConv(hidden, channels, act=act),
                                    conv_bn(channels, channels, 1, act=act))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, out_dim)
        # start near the parameter mean (zero in whitened space), as TimmRegressor does
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.blocks(feats).mean((2, 3))))


class MultiTaskRegressor(FaceRegressor):
    """timm backbone -> one head per task; ``forward`` gives the 62 whitened params (pose|shape|expr).

    ``landmark_head=True`` adds a fourth head regressing 68x3 landmarks directly (not in the paper,
    which derives landmarks from the parameters; see ``forward_tasks(x, face_model)``).
    """

    def __init__(self, backbone: str, input_size: int = 128, head_width: float = 4.0,
                 landmark_head: bool = False, drop_rate: float = 0.0):
        super().__init__()
        self.backbone_name = backbone
        self.input_size = int(input_size)
        # pretrained=False: edgefa never downloads weights at run time
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
        broadcast_linear_attention(self.backbone)  # MobileViT v2: exact rewrite that LiteRT converts
        # Feature map = timm ``forward_features`` (the last 1x1 conv on the spatial map, Sec. 2):
        #  - mobilevit_s: final_conv 1x1 160->640 + BN + SiLU -> (B, 640, S/32, S/32);
        #  - mobilevitv2_100: final_conv is Identity; the last block's conv_proj 1x1 256->512 + BN;
        #  - mobilenetv3_small_100: forward_features stops after the last block, a ConvBnAct 1x1
        #    96->576 + BN + hardswish -> (B, 576, 4, 4) at 120. timm's ``conv_head`` (576->1024)
        #    runs only after global pooling (in forward_head), i.e. it is a linear layer on a vector
        #    and cannot feed spatial MBConv heads, so it is removed (no unused parameters).
        if isinstance(getattr(self.backbone, "conv_head", None), nn.Module):
            self.backbone.conv_head = nn.Identity()
        channels = self.backbone.num_features
        act = nn.Hardswish if backbone.startswith("mobilenetv3") else nn.SiLU  # the backbone's activation
        dims = dict(TASK_DIMS, **({"landmarks": N_LANDMARKS * 3} if landmark_head else {}))
        self.heads = nn.ModuleDict({task: TaskHead(channels, dim, head_width, drop_rate, act)
                                    for task, dim in dims.items()})
        self.num_params = sum(TASK_DIMS.values())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        return torch.cat([self.heads[task](feats) for task in TASK_DIMS], dim=1)

    def forward_tasks(self, x: torch.Tensor, face_model=None) -> dict[str, torch.Tensor]:
        """All task outputs: ``pose`` (B, 12), ``shape`` (B, 40), ``expression`` (B, 10), whitened,
        ``params`` (B, 62) = their concatenation; ``landmarks`` (B, 68, 3) from the landmark head if
        there is one. Given a ``face_model`` also ``landmarks_3dmm`` (B, 68, 3, crop pixels, Eq. 1)
        and ``euler`` (B, 3, yaw/pitch/roll degrees), both differentiable, for Eqs. (2)-(3).
        """
        feats = self.features(x)
        out = {task: head(feats) for task, head in self.heads.items()}
        if "landmarks" in out:
            out["landmarks"] = out["landmarks"].reshape(-1, N_LANDMARKS, 3)
        out["params"] = torch.cat([out[task] for task in TASK_DIMS], dim=1)
        if face_model is not None:
            from edgefa.facemodel.geometry import dewhiten, euler_angles, landmarks

            raw = dewhiten(out["params"], face_model)
            out["landmarks_3dmm"] = landmarks(raw, face_model)
            out["euler"] = euler_angles(raw)
        return out


def _builder(backbone: str):
    def build(**cfg) -> MultiTaskRegressor:
        return MultiTaskRegressor(backbone, **cfg)

    return build


for _name, (_backbone, _size) in MULTITASK_BACKBONES.items():
    register_model(_name, _builder(_backbone), family="multitask", input_size=_size)
