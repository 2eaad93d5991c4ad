"""A Trans3DHead-style query-decoder head on a mobile backbone (shared/papers/trans3dhead-qamem-marr.md):
a 68-query landmark branch (MQinit, QAMem, MARR) beside 62 parameter queries. Eval-mode ``forward``
gives the 62 whitened parameters like every model; training mode adds the branch's landmarks.
The paper-to-phone scaling and every choice: docs/papers.md#query-decoder.
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from torch import nn

from edgefa.models.base import FaceRegressor, register_model
from edgefa.models.timm_backbones import broadcast_linear_attention

N_LANDMARKS = 68

# registry name -> timm backbone (input 120, memory at stride 32)
QUERY_DECODER_BACKBONES = {"query_decoder_mobilenetv3_small": "mobilenetv3_small_100",
                           "query_decoder_mobilenetv2": "mobilenetv2_100"}


class QAMem(nn.Module):
    """Query-aware memory, Eq. 3: query i's extracted value (1 x d) times its own T_i (d x d).

    Stored and run as the paper says, a 1x1 convolution with N groups over the N stacked query
    embeddings: group i's weight W_i (d_out x d_in) is T_i transposed."""

    def __init__(self, n_queries: int, dim: int):
        super().__init__()
        self.n, self.dim = n_queries, dim
        self.conv = nn.Conv2d(n_queries * dim, n_queries * dim, 1, groups=n_queries, bias=False)
        with torch.no_grad():  # start as the identity: plain shared-memory attention
            self.conv.weight.copy_(torch.eye(dim).repeat(n_queries, 1).reshape(n_queries * dim, dim, 1, 1))

    def transforms(self) -> torch.Tensor:
        """T (N, d, d) with Q_i T_i = the conv's output for query i."""
        return self.conv.weight.reshape(self.n, self.dim, self.dim).transpose(1, 2)

    def forward(self, extracted: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, N, d)
        b = extracted.shape[0]
        out = self.conv(extracted.reshape(b, self.n * self.dim, 1, 1))
        return out.reshape(b, self.n, self.dim)


class CrossAttention(nn.Module):
    """Multi-head cross-attention from queries to the memory; with ``qamem`` the concatenated heads'
    extracted values go through QAMem before the output projection."""

    def __init__(self, dim: int, heads: int, qamem: QAMem | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.qamem = qamem

    def attention(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Weights A (B, heads, N, S)."""
        b, n, _ = query.shape
        q = self.q(query).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(key).reshape(b, -1, self.heads, self.head_dim).transpose(1, 2)
        return F.softmax(q @ k.transpose(2, 3) / math.sqrt(self.head_dim), dim=-1)

    def forward(self, query: torch.Tensor, key: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, n, d = query.shape
        attn = self.attention(query, key)
        v = self.v(memory).reshape(b, -1, self.heads, self.head_dim).transpose(1, 2)
        extracted = (attn @ v).transpose(1, 2).reshape(b, n, d)  # A . M, heads side by side
        if self.qamem is not None:
            extracted = self.qamem(extracted)  # (A . M) . T_i
        return self.out(extracted)


class DecoderLayer(nn.Module):
    """DETR decoder layer (post-norm): self-attention, cross-attention to the memory, FFN."""

    def __init__(self, dim: int, heads: int, ffn: int, qamem: QAMem | None = None, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross = CrossAttention(dim, heads, qamem)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(inplace=True), nn.Linear(ffn, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, memory, memory_key):
        """``memory_key`` = memory + its positional embedding (the attention keys)."""
        q = tgt + query_pos
        tgt = self.norms[0](tgt + self.drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norms[1](tgt + self.drop(self.cross(tgt + query_pos, memory_key, memory)))
        return self.norms[2](tgt + self.drop(self.ffn(tgt)))


def marr(mean_face: torch.Tensor, residuals: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 5: P_L = F_a + sum_i res_i."""
    out = mean_face
    for res in residuals:
        out = out + res
    return out


def synthetic_mean_face() -> torch.Tensor:
    """F_a: the synthetic face model's 68 landmarks (crop pixels) at its parameter mean."""
    from edgefa.facemodel.geometry import landmarks
    from edgefa.facemodel.synthetic import synthetic_face_model

    fm = synthetic_face_model()
    return torch.as_tensor(landmarks(fm.param_mean, fm), dtype=torch.float32)


class QueryDecoderRegressor(FaceRegressor):
    def __init__(self, backbone: str = "mobilenetv3_small_100", input_size: int = 120, dim: int = 64,
                 heads: int = 4, layers: int = 2, ffn: int = 128, num_params: int = 62, qamem: bool = True,
                 mq_init: bool = True, dropout: float = 0.0):
        super().__init__()
        self.backbone_name, self.input_size, self.num_params = backbone, int(input_size), int(num_params)
        # pretrained=False: edgefa never downloads weights at run time
        self.backbone = broadcast_linear_attention(timm.create_model(backbone, pretrained=False, num_classes=0))
        if type(self.backbone).__name__ == "MobileNetV3":
            self.backbone.conv_head = nn.Identity()  # runs after pooling there, not on the map: unused
        # memory grid: stride-2 convs with 'same' padding give ceil(size / 32) per side
        side = math.ceil(self.input_size / self.backbone.feature_info[-1]["reduction"])
        grid = (1, self.backbone.num_features, side, side)
        self.memory_proj = nn.Conv2d(grid[1], dim, 1)
        self.memory_pos = nn.Parameter(torch.randn(1, grid[2] * grid[3], dim) * 0.02)
        # landmark branch: MQinit, QAMem per layer, MARR heads per layer
        self.lmk_query_pos = nn.Parameter(torch.randn(1, N_LANDMARKS, dim) * 0.02)
        self.mq_init = nn.Linear(dim, N_LANDMARKS * dim) if mq_init else None
        self.lmk_layers = nn.ModuleList(
            DecoderLayer(dim, heads, ffn, QAMem(N_LANDMARKS, dim) if qamem else None, dropout) for _ in range(layers))
        self.residual_heads = nn.ModuleList(nn.Linear(dim, 3) for _ in range(layers))
        for head in self.residual_heads:  # start at F_a
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.register_buffer("mean_face", synthetic_mean_face().unsqueeze(0))  # fixed F_a, not a parameter
        # parameter branch: one learned query per parameter, zero content (DETR object queries)
        self.param_query_pos = nn.Parameter(torch.randn(1, self.num_params, dim) * 0.02)
        self.param_layers = nn.ModuleList(DecoderLayer(dim, heads, ffn, None, dropout) for _ in range(layers))
        self.param_head = nn.Linear(dim, 1)
        nn.init.normal_(self.param_head.weight, std=1e-3)  # start near the parameter mean
        nn.init.zeros_(self.param_head.bias)
        self.pixel_scale = float(self.input_size) / 4  # residual units: a quarter of the crop

    def memory(self, x: torch.Tensor) -> torch.Tensor:
        m = self.memory_proj(self.backbone.forward_features(x))
        return m.flatten(2).transpose(1, 2)  # (B, S, d)

    def _params(self, memory: torch.Tensor) -> torch.Tensor:
        # positional embeddings broadcast over the batch (an expanded view of a parameter made
        # under no_grad trips torch's module tracker, used by the FLOP counter)
        pos = self.param_query_pos
        tgt, key = memory.new_zeros(memory.shape[0], *pos.shape[1:]), memory + self.memory_pos
        for layer in self.param_layers:
            tgt = layer(tgt, pos, memory, key)
        return self.param_head(tgt).squeeze(-1)  # (B, 62) whitened

    def landmark_branch(self, memory: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(landmarks (B, 68, 3) crop pixels, per-layer residuals)."""
        b = memory.shape[0]
        pos = self.lmk_query_pos
        if self.mq_init is not None:  # Eq. 1
            tgt = self.mq_init(memory.mean(1)).reshape(b, N_LANDMARKS, -1)
        else:
            tgt = memory.new_zeros(b, *pos.shape[1:])
        residuals, key = [], memory + self.memory_pos
        for layer, head in zip(self.lmk_layers, self.residual_heads):
            tgt = layer(tgt, pos, memory, key)
            residuals.append(head(tgt) * self.pixel_scale)
        return marr(self.mean_face, residuals), residuals

    def forward_all(self, x: torch.Tensor) -> dict:
        memory = self.memory(x)
        landmarks, residuals = self.landmark_branch(memory)
        return {"params": self._params(memory), "landmarks": landmarks, "residuals": residuals}

    def forward(self, x: torch.Tensor):
        if self.training:
            out = self.forward_all(x)
            return {"params": out["params"], "landmarks": out["landmarks"]}
        return self._params(self.memory(x))  # the landmark branch is training-only: not run, not exported


def _builder(backbone: str):
    def build(**cfg) -> QueryDecoderRegressor:
        return QueryDecoderRegressor(backbone, **cfg)

    return build


for _name, _backbone in QUERY_DECODER_BACKBONES.items():
    register_model(_name, _builder(_backbone), family="query_decoder", input_size=120)
