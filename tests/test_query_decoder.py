"""The Trans3DHead-style query decoder: QAMem (Eq. 2 = Eq. 3), MARR (Eq. 5), MQinit (Eq. 1), the
training-only landmark branch, the Euler-angle loss, training and export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgefa.models.query_decoder import (
    N_LANDMARKS,
    CrossAttention,
    QAMem,
    QueryDecoderRegressor,
    marr,
)
from edgefa.models.registry import create_model, list_models

NAME = "query_decoder_mobilenetv3_small"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model(NAME)


def test_registered_params_out_in_eval_and_branch_in_training(model):
    assert {NAME, "query_decoder_mobilenetv2"} <= set(list_models("query_decoder_*"))
    x = torch.randn(2, 3, 120, 120)
    model.train()
    out = model(x)
    assert out["params"].shape == (2, 62) and out["landmarks"].shape == (2, N_LANDMARKS, 3)
    model.eval()
    with torch.no_grad():
        params = model(x)
        torch.testing.assert_close(params, model.forward_all(x)["params"])  # same parameter branch
    assert params.shape == (2, 62)
    # the memory is low resolution: 4x4 grid of the backbone's last map at 120 px
    assert model.memory(x).shape == (2, 16, 64)


def test_qamem_grouped_conv_equals_per_query_memories_single_head():
    """Eq. 2 (a separate memory M T_i per query, then attention) = Eq. 3 (attention on the shared
    memory, then T_i on the extracted embedding, as a grouped 1x1 conv)."""
    torch.manual_seed(1)
    n, s, d, b = 5, 12, 8, 3
    qamem = QAMem(n, d)
    torch.nn.init.normal_(qamem.conv.weight)
    attn = torch.softmax(torch.randn(b, n, s), dim=-1)
    memory = torch.randn(b, s, d)
    eq3 = qamem(attn @ memory)
    t = qamem.transforms()
    eq2 = torch.stack([attn[:, i:i + 1] @ (memory @ t[i]) for i in range(n)], dim=1).squeeze(2)
    torch.testing.assert_close(eq3, eq2, rtol=1e-5, atol=1e-5)


def test_qamem_in_multi_head_cross_attention_equals_per_query_memories():
    """The same inside the model's cross-attention with 4 heads: per query i and head h, the memory
    is V_h T_i[h rows] (query i's own value memory), its head's attention reads it, heads are summed."""
    torch.manual_seed(2)
    n, s, d, heads, b = 6, 16, 16, 4, 2
    cross = CrossAttention(d, heads, QAMem(n, d)).eval()
    torch.nn.init.normal_(cross.qamem.conv.weight, std=0.3)
    query, key, memory = torch.randn(b, n, d), torch.randn(b, s, d), torch.randn(b, s, d)
    with torch.no_grad():
        got = cross(query, key, memory)
        attn = cross.attention(query, key)  # (B, heads, N, S)
        v = cross.v(memory)  # (B, S, d)
        t = cross.qamem.transforms()  # (N, d, d)
        hd = d // heads
        per_query = []
        for i in range(n):
            own = [v[:, :, h * hd:(h + 1) * hd] @ t[i, h * hd:(h + 1) * hd] for h in range(heads)]  # (B, S, d)
            per_query.append(sum(attn[:, h, i:i + 1] @ own[h] for h in range(heads)).squeeze(1))
        expected = cross.out(torch.stack(per_query, dim=1))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_qamem_starts_as_identity_and_has_one_transform_per_query():
    qamem = QAMem(N_LANDMARKS, 64)
    assert sum(p.numel() for p in qamem.parameters()) == N_LANDMARKS * 64 * 64
    x = torch.randn(2, N_LANDMARKS, 64)
    torch.testing.assert_close(qamem(x), x)


def test_marr_is_mean_face_plus_sum_of_residuals(model):
    torch.manual_seed(3)
    for head in model.residual_heads:  # non-trivial residuals (they start at zero)
        torch.nn.init.normal_(head.weight, std=0.5)
    model.eval()
    with torch.no_grad():
        memory = model.memory(torch.randn(2, 3, 120, 120))
        landmarks, residuals = model.landmark_branch(memory)
    assert len(residuals) == 2 and all(r.abs().max() > 0.1 for r in residuals)
    torch.testing.assert_close(landmarks, model.mean_face + residuals[0] + residuals[1])
    torch.testing.assert_close(marr(model.mean_face, residuals), landmarks)
    # F_a is fixed (a buffer, not trained) and in crop pixels: the synthetic mean face
    assert "mean_face" in dict(model.named_buffers()) and "mean_face" not in dict(model.named_parameters())
    from edgefa.facemodel.geometry import landmarks as lms
    from edgefa.facemodel.synthetic import synthetic_face_model

    fm = synthetic_face_model()
    np.testing.assert_allclose(model.mean_face[0].numpy(), lms(fm.param_mean, fm), atol=1e-4)


def test_mqinit_queries_come_from_the_memory():
    torch.manual_seed(4)
    with_init = QueryDecoderRegressor(layers=1).eval()
    without = QueryDecoderRegressor(layers=1, mq_init=False, qamem=False).eval()
    assert without.mq_init is None and without.lmk_layers[0].cross.qamem is None
    calls = []
    with_init.mq_init.register_forward_hook(lambda mod, inp, out: calls.append((inp[0], out)))
    with torch.no_grad():
        memory = with_init.memory(torch.randn(2, 3, 120, 120))
        with_init.landmark_branch(memory)
    pooled, queries = calls[0]
    torch.testing.assert_close(pooled, memory.mean(1))  # Eq. 1: FC(GlobalAvgPool(M))
    assert queries.shape == (2, N_LANDMARKS * 64)


def test_euler_and_branch_terms(toy_face_model):
    from edgefa.training.objectives import loss_terms

    rng = np.random.default_rng(0)
    fm = toy_face_model
    raw = (fm.param_mean + fm.param_std * rng.normal(size=(4, 62)) * 0.3).astype(np.float32)
    from edgefa.facemodel.geometry import euler_angles, landmarks, whiten

    pts = torch.from_numpy(landmarks(raw, fm))
    batch = {"params": torch.from_numpy(raw), "pts68": pts, "pts21": torch.full((4, 21, 2), float("nan")),
             "pose": torch.from_numpy(euler_angles(raw.astype(np.float64))).float()}
    cfg = {"params": 0, "landmarks": 0, "pts21": 0, "yaw": 0, "distill": 0, "euler": 1, "branch_landmarks": 1,
           "dense": 0, "param_loss": "l2", "distill_loss": "vdc"}
    exact = torch.from_numpy(whiten(raw, fm))
    terms = loss_terms(exact, batch, fm, cfg, aux={"landmarks": pts})
    assert terms["euler"] < 1e-3 and terms["branch_landmarks"] < 1e-6
    terms = loss_terms(exact, batch, fm, cfg, aux={"landmarks": pts + 3.0})
    assert terms["branch_landmarks"] > 0.5
    batch["pose"][:, 1] += 10.0  # pitch labels off by 10 degrees
    assert loss_terms(exact, batch, fm, cfg)["euler"] > 2.0


def test_trains_with_edgefa_train(tmp_path, capsys):
    from edgefa.app.cli import main
    from edgefa.models.checkpoint import load_checkpoint

    args = ["train", "--config", "training/configs/query-decoder.yaml", "--quiet", "epochs=1",
            "face_model=synthetic", "teacher=null", "data.train=synthetic:seed=0,n=8",
            "data.val=synthetic:seed=1,n=4", "data.workers=0", "batch_size=4", "augment=false",
            "loss.distill=0", "loss.params=1", "loss.param_loss=l2", f"output={tmp_path}/run"]
    assert main(args) == 0
    capsys.readouterr()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    terms = state["history"][-1]["terms"]
    assert {"params", "landmarks", "euler", "branch_landmarks"} <= set(terms), terms
