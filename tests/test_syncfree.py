"""The sync-free training step (loss terms, PCGrad, face-model constants) against today's code.

``reference_loss_terms`` / ``_reference_aux_terms`` / ``_reference_param_distance`` and
``reference_project`` are verbatim copies of ``training/objectives.py`` and ``PCGrad.project`` as they
were before the step went sync-free (boolean indexing, ``.any()``, tensor truthiness), renamed only.
The new code must give the same values and gradients wherever the reference defines a term, and a
0 term (in the graph, zero gradient) where the reference leaves it out.
"""
from __future__ import annotations

import gc
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgefa.data.aflw_train import AFLW21_TO_68
from edgefa.errors import EdgefaError
from edgefa.facemodel import geometry
from edgefa.facemodel.base import FaceModel
from edgefa.facemodel.geometry import euler_angles, landmarks, whiten
from edgefa.training import losses
from edgefa.training.losses import (
    euler_angle_loss,
    masked_landmark_loss,
    vdc_loss,
    wing_mse_loss,
    wpdc_loss,
)
from edgefa.training.objectives import label_masks, loss_terms, weighted
from edgefa.training.pcgrad import PCGrad

IDX21 = [i for i, j in sorted(AFLW21_TO_68.items()) if j is not None]
IDX68 = [AFLW21_TO_68[i] for i in IDX21]


# -- the reference: training/objectives.py before this change, verbatim but for the names ----------
def _reference_param_distance(kind: str, pred_w, target_w, fm):
    if kind == "wpdc":
        return wpdc_loss(pred_w, target_w, fm)
    if kind == "vdc":
        return vdc_loss(pred_w, target_w, fm)
    return ((pred_w - target_w) ** 2).mean()


def reference_loss_terms(pred_w: torch.Tensor, batch: dict, fm: FaceModel, cfg: dict,
                         teacher_raw: torch.Tensor | None = None, aux: dict | None = None) -> dict:
    """Each active term, unweighted, on ``pred_w``'s device; ``cfg`` is the recipe's ``loss`` section."""
    dev = pred_w.device
    batch = {k: v.to(dev) for k, v in batch.items() if k != "image"}
    mean = torch.as_tensor(fm.param_mean, device=dev)
    std = torch.as_tensor(fm.param_std, device=dev)
    pred_raw = pred_w * std + mean
    pred_pts = landmarks(pred_raw, fm)
    pct = 100.0 / fm.size
    terms = {}
    params = batch["params"]
    have = torch.isfinite(params).all(dim=1)
    if cfg["params"] and have.any():
        terms["params"] = _reference_param_distance(cfg["param_loss"], pred_w[have], whiten(params[have], fm), fm)
    pts68 = batch["pts68"][..., :2]
    have = torch.isfinite(pts68).all(dim=(1, 2))
    if cfg["landmarks"] and have.any():
        terms["landmarks"] = pct * (pred_pts[have, :, :2] - pts68[have]).norm(dim=-1).mean()
    pts21 = batch["pts21"][:, IDX21]
    visible = torch.isfinite(pts21[..., 0])
    if cfg["pts21"] and visible.any():
        terms["pts21"] = pct * masked_landmark_loss(pred_pts[:, IDX68, :2], torch.nan_to_num(pts21), visible,
                                                    kind="wing")
    yaw = batch["pose"][:, 0]
    have = torch.isfinite(yaw)
    if cfg["yaw"] and have.any():
        pred_yaw = euler_angles(pred_raw[have])[:, 0]
        terms["yaw"] = (pred_yaw - yaw[have]).abs().mean()
    if cfg["distill"] and teacher_raw is not None:
        terms["distill"] = _reference_param_distance(cfg["distill_loss"], pred_w, whiten(teacher_raw.to(dev), fm), fm)
    angles = batch["pose"]
    have = torch.isfinite(angles).all(dim=1)
    if cfg.get("euler") and have.any():
        terms["euler"] = euler_angle_loss(pred_w[have], None, fm, target_angles=angles[have])
    terms.update(_reference_aux_terms(aux or {}, batch, fm, cfg, pct))
    return terms


def _reference_aux_terms(aux: dict, batch: dict, fm: FaceModel, cfg: dict, pct: float) -> dict:
    terms = {}
    pts68 = batch["pts68"][..., :2]
    have = torch.isfinite(pts68).all(dim=(1, 2))
    if cfg.get("branch_landmarks") and "landmarks" in aux and have.any():
        pred = aux["landmarks"][have, :, :2].float()
        terms["branch_landmarks"] = F.smooth_l1_loss(pct * pred, pct * pts68[have])
    params = batch["params"]
    have = torch.isfinite(params).all(dim=1)
    if cfg.get("dense") and "dense" in aux and have.any():
        if fm.dense is None:
            raise ValueError(f"loss.dense: face model '{fm.name}' has no dense mesh to take dense labels from")
        index = aux["dense_index"].long()
        target = landmarks(params[have], fm, dense=True)[:, index]
        terms["dense"] = wing_mse_loss(pct * aux["dense"][have].float(), pct * target, w1=1.5, w2=0.5,
                                       mse_index=aux["dense_lmk68"].long())
    return terms


# -- the reference: PCGrad.project before this change, verbatim but for the name ---------------------
def reference_project(self, grads: torch.Tensor) -> torch.Tensor:
    """(T, N) flat task gradients -> (T, N) projected gradients (Algorithm 1 of the paper)."""
    projected = grads.clone()
    n_tasks = grads.shape[0]
    sq_norms = (grads * grads).sum(dim=1)
    for i in range(n_tasks):
        g = projected[i]
        for j in torch.randperm(n_tasks, generator=self.generator).tolist():
            if j == i or sq_norms[j] == 0:
                continue
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g -= (dot / sq_norms[j]) * grads[j]
    return projected


class ReferencePCGrad(PCGrad):
    project = reference_project


# -- fixtures -------------------------------------------------------------------------------------------
B = 6
N_DENSE = 40  # regressed dense points (a random subset of the mesh), the first 12 of them in the MSE part
WEIGHTS = {"params": 1.0, "landmarks": 0.5, "pts21": 0.3, "yaw": 0.1, "distill": 0.7, "euler": 0.2,
           "branch_landmarks": 0.4, "dense": 0.6}


@pytest.fixture(scope="module")
def fm() -> FaceModel:
    from edgefa.data.registry import create_dataset

    face_model = create_dataset("synthetic:seed=0,n=8").face_model
    assert face_model.dense is not None  # the dense term needs the mesh
    return face_model


def _full_batch(fm: FaceModel, seed: int = 0):
    """Every label present, near (not at) the truth, plus a prediction, teacher and aux outputs."""
    rng = np.random.default_rng(seed)
    raw = (fm.param_mean + fm.param_std * rng.normal(size=(B, 62)) * 0.3).astype(np.float32)
    pts = landmarks(raw, fm)
    pts21 = np.full((B, 21, 2), np.nan, np.float32)
    for i, j in AFLW21_TO_68.items():
        if j is not None:
            pts21[:, i] = pts[:, j, :2]
    noise = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    batch = {"params": torch.from_numpy(raw), "pts68": torch.from_numpy(pts + noise(B, 68, 3)),
             "pts21": torch.from_numpy(pts21 + noise(B, 21, 2)),
             "pose": torch.from_numpy(euler_angles(raw.astype(np.float64)).astype(np.float32) + 3 * noise(B, 3)),
             "image": torch.zeros(B, 3, 8, 8)}
    pred_w = torch.from_numpy(whiten(raw, fm) + 0.5 * noise(B, 62))
    teacher_raw = torch.from_numpy(raw + fm.param_std * 0.2 * noise(B, 62))
    dense_index = torch.from_numpy(rng.choice(len(fm.dense.mean), N_DENSE, replace=False))
    dense = landmarks(raw, fm, dense=True)[:, dense_index.numpy()] + 2 * noise(B, N_DENSE, 3)
    aux = {"landmarks": torch.from_numpy(pts[..., :2] + 2 * noise(B, 68, 2)), "dense": torch.from_numpy(dense),
           "dense_index": dense_index, "dense_lmk68": torch.arange(12)}
    return batch, pred_w, teacher_raw, aux


def _nan(batch: dict, key: str, rows, cols=slice(None)) -> None:
    batch[key][(rows, cols) if batch[key].ndim == 2 else (rows, cols, slice(None))] = float("nan")


ALL = slice(None)
SCENARIOS = {
    "every_label": [],
    "no_labels": [("params", ALL), ("pts68", ALL), ("pts21", ALL), ("pose", ALL)],
    "no_params": [("params", ALL)],
    "flipped": [("params", ALL), ("pts68", [1], [5])],  # flips drop the 3DMM params (one hidden point too)
    "no_pts21": [("pts21", ALL)],
    "no_yaw": [("pose", ALL, [0])],  # pitch and roll without yaw: no euler either
    # per sample: 0 all, 1 no params, 2 a hidden 68-point, 3 yaw only, 4 nothing, 5 three AFLW points
    "mixed": [("params", [1, 3, 4]), ("pts68", [2], [7]), ("pts68", [3, 4]), ("pose", [3], [1, 2]),
              ("pose", [4]), ("pts21", [4]), ("pts21", [5], list(range(3, 21)))],
}


def _scenario(fm: FaceModel, name: str):
    batch, pred_w, teacher_raw, aux = _full_batch(fm)
    for key, *index in SCENARIOS[name]:
        _nan(batch, key, *index)
    return batch, pred_w, teacher_raw, aux


def _total_and_grads(terms_fn, pred_w, batch, fm, cfg, teacher_raw, aux):
    """sum(weighted(terms)), the terms, and d total / d (pred_w, aux landmarks, aux dense)."""
    pred_w = pred_w.clone().requires_grad_(True)
    aux = {**aux, **{k: aux[k].clone().requires_grad_(True) for k in ("landmarks", "dense") if k in aux}}
    terms = terms_fn(pred_w, {k: v.clone() for k, v in batch.items()}, fm, cfg, teacher_raw, aux=aux)
    total = sum(weighted(terms, cfg, pred_w))
    inputs = [pred_w, *(aux[k] for k in ("landmarks", "dense") if k in aux)]
    grads = torch.autograd.grad(total, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
    return total, terms, grads


# -- loss_terms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("param_loss", ["wpdc", "vdc", "l2"])
def test_loss_terms_match_the_reference_in_value_and_gradient(fm, scenario, param_loss):
    cfg = {**WEIGHTS, "param_loss": param_loss, "distill_loss": param_loss}
    batch, pred_w, teacher_raw, aux = _scenario(fm, scenario)
    total, terms, grads = _total_and_grads(loss_terms, pred_w, batch, fm, cfg, teacher_raw, aux)
    ref_total, ref_terms, ref_grads = _total_and_grads(reference_loss_terms, pred_w, batch, fm, cfg, teacher_raw, aux)

    assert set(terms) == {k for k, w in WEIGHTS.items() if w}  # every weighted term, labelled or not
    for name, value in terms.items():
        assert value.requires_grad and torch.isfinite(value), name
        if name in ref_terms:
            torch.testing.assert_close(value, ref_terms[name].to(value.dtype), rtol=1e-5, atol=1e-6, msg=name)
        else:  # no sample has the label: 0, still in the graph
            assert value.item() == 0.0, name
    torch.testing.assert_close(total, ref_total.to(total.dtype), rtol=1e-5, atol=1e-6)
    for name, grad, ref in zip(("pred_w", "aux landmarks", "aux dense"), grads, ref_grads):
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6, msg=name)


def test_scenarios_cover_present_and_absent_terms(fm):
    """The scenarios above really exercise both sides: terms the reference leaves out, and ones it keeps."""
    cfg = {**WEIGHTS, "param_loss": "l2", "distill_loss": "l2"}
    absent = {}
    for name in SCENARIOS:
        batch, pred_w, teacher_raw, aux = _scenario(fm, name)
        absent[name] = set(WEIGHTS) - set(reference_loss_terms(pred_w, batch, fm, cfg, teacher_raw, aux=aux))
    assert absent["every_label"] == set() and absent["mixed"] == set()
    assert absent["no_labels"] == set(WEIGHTS) - {"distill"}
    assert absent["no_params"] == absent["flipped"] == {"params", "dense"}
    assert absent["no_pts21"] == {"pts21"} and absent["no_yaw"] == {"yaw", "euler"}


def test_unlabelled_samples_keep_nan_out_of_gradients(fm):
    """A degenerate prediction (a zero pose matrix: the angle math divides by its rows' norms) on a
    sample without a pose label: today's indexing never evaluated it, and it must not turn the
    yaw / euler gradients into NaN now that every sample is evaluated and masked."""
    plain = replace(fm, param_mean=np.zeros(62, np.float32), param_std=np.ones(62, np.float32))
    batch, pred_w, _, _ = _full_batch(plain)
    pred_w[0, :12] = 0.0
    _nan(batch, "pose", [0])
    cfg = {**{k: 0.0 for k in WEIGHTS}, "yaw": 1.0, "euler": 1.0, "param_loss": "l2", "distill_loss": "l2"}
    total, terms, (grad, *_) = _total_and_grads(loss_terms, pred_w, batch, plain, cfg, None, {})
    ref_total, _, (ref_grad, *_) = _total_and_grads(reference_loss_terms, pred_w, batch, plain, cfg, None, {})
    assert torch.isfinite(total) and torch.isfinite(grad).all() and (grad[0] == 0).all()
    torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_label_masks(fm):
    batch, *_ = _scenario(fm, "mixed")
    masks = {k: v.tolist() for k, v in label_masks(batch).items()}
    assert masks == {"params": [True, False, True, False, False, True],
                     "landmarks": [True, True, False, False, False, True],
                     "pts21": [True, True, True, True, False, True],
                     "yaw": [True, True, True, True, False, True],
                     "euler": [True, True, True, False, False, True]}


@pytest.mark.parametrize("weights, ok", [({"pts21": 1.0}, False), ({"pts21": 1.0, "landmarks": 1.0}, True)])
def test_taylor_pruning_checks_the_labels_not_the_terms(fm, weights, ok):
    """Terms are now returned without labels (as 0), so pruning's "no labels" check reads the labels:
    synthetic crops carry 3DMM params and 68 points but no AFLW-21 points."""
    import copy

    from edgefa.app.compress import _taylor_loss
    from edgefa.training.config import DEFAULTS

    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"]["train"] = "synthetic:seed=0,n=2"
    cfg["loss"] = {**{k: 0.0 for k in WEIGHTS}, **weights, "param_loss": "l2", "distill_loss": "vdc"}
    if ok:
        assert callable(_taylor_loss(cfg, fm, 2))
    else:
        with pytest.raises(EdgefaError, match="no labels the loss weights use"):
            _taylor_loss(cfg, fm, 2)


# -- per-sample forms of the losses -------------------------------------------------------------------
def _l2(pred_w, target_w, fm, **kw):
    return losses.param_l2_loss(pred_w, target_w, **kw)


@pytest.mark.parametrize("loss, options", [
    (wpdc_loss, {"normalize": "sum"}), (wpdc_loss, {"normalize": "max"}),
    (wpdc_loss, {"normalize": "max", "ignore_tz": True}), (vdc_loss, {}), (vdc_loss, {"dense": True, "ignore_tz": True}),
    (_l2, {}), (euler_angle_loss, {}),
], ids=["wpdc-sum", "wpdc-max", "wpdc-max-ignore_tz", "vdc", "vdc-dense-ignore_tz", "l2", "euler"])
def test_parameter_losses_per_sample(fm, loss, options):
    """reduction="none": one value per sample, each the loss of that sample alone; their mean is the
    default (batch mean) loss."""
    _, pred_w, teacher_raw, _ = _full_batch(fm)
    target_w = whiten(teacher_raw, fm)
    per_sample = loss(pred_w, target_w, fm, reduction="none", **options)
    assert per_sample.shape == (B,)
    torch.testing.assert_close(per_sample.mean(), loss(pred_w, target_w, fm, **options), rtol=1e-6, atol=0)
    for i in range(B):
        alone = loss(pred_w[i:i + 1], target_w[i:i + 1], fm, **options)
        torch.testing.assert_close(per_sample[i], alone, rtol=1e-5, atol=1e-7)


def test_point_losses_per_sample_and_unknown_reduction():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 30, 3, generator=gen) * 8, torch.randn(4, 30, 3, generator=gen) * 8
    for loss, options in ((losses.wing_loss, {}), (wing_mse_loss, {"mse_index": torch.arange(5, 17)})):
        per_sample = loss(pred, target, reduction="none", **options)
        torch.testing.assert_close(per_sample.mean(), loss(pred, target, **options))
        torch.testing.assert_close(per_sample[2], loss(pred[2:3], target[2:3], **options))
    torch.testing.assert_close(  # the hybrid's MSE part is still F.mse_loss on the chosen points
        wing_mse_loss(pred, target, w1=0.0, w2=1.0, mse_index=[1, 4]), F.mse_loss(pred[:, [1, 4]], target[:, [1, 4]]))
    with pytest.raises(EdgefaError, match="unknown reduction 'sum'"):
        losses.reduce_batch(pred, "sum")


# -- PCGrad ----------------------------------------------------------------------------------------------
def _conflicting(n_tasks=4, n=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(n_tasks, n, generator=gen, dtype=torch.float64)
    grads[1] = -grads[0] + 0.1 * grads[1]  # strongly against task 0
    return grads


def _agreeing(n_tasks=4, n=50, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n_tasks, n, generator=gen) + 0.1  # all positive: every dot product > 0


def _with_zero_rows(n_tasks=5, n=50, seed=2):
    grads = _conflicting(n_tasks, n, seed).float()
    grads[2] = 0.0  # a task whose label no sample had: its term is 0, so is its gradient
    grads[4, :10] = 1e-30  # squares underflow to 0 in float32: also "no direction"
    grads[4, 10:] = 0.0
    return grads


@pytest.mark.parametrize("make", [_conflicting, _agreeing, _with_zero_rows])
@pytest.mark.parametrize("seed", [0, 7])
def test_pcgrad_project_matches_the_reference(make, seed):
    grads = make()
    new = PCGrad(torch.optim.SGD([torch.zeros(1)], lr=0.1), seed=seed)
    ref = ReferencePCGrad(torch.optim.SGD([torch.zeros(1)], lr=0.1), seed=seed)
    for _ in range(3):  # the generators must stay in step over calls too
        out = new.project(grads)
        assert torch.equal(out, ref.project(grads))
    if make is _agreeing:
        assert torch.equal(out, grads)
    if make is _with_zero_rows:
        # nothing is projected onto a zero (or underflowing) direction: no 0/0, and a 0 row stays 0
        assert torch.isfinite(out).all() and torch.equal(out[2], grads[2])
    if make is _conflicting:
        assert not torch.equal(out[0], grads[0])


def test_pcgrad_backward_matches_the_reference_with_a_zero_term():
    """pc_backward over a small two-head model whose third loss is a 0 term (no label in the batch)."""
    def run(cls):
        torch.manual_seed(0)
        trunk, head_a, head_b = torch.nn.Linear(5, 4), torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
        params = [*trunk.parameters(), *head_a.parameters(), *head_b.parameters()]
        opt = cls(torch.optim.SGD(params, lr=0.1), seed=3)
        x = torch.randn(8, 5)
        h = trunk(x).tanh()
        a, b = head_a(h), head_b(h)
        have = torch.zeros(8, dtype=torch.bool)
        zero_term = torch.where(have, (b ** 2).sum(1), torch.zeros(8)).sum() / have.sum().clamp(min=1)
        shared = opt.pc_backward([(a - 1).pow(2).mean(), (b + 1).pow(2).mean() - a.mean(), zero_term])
        opt.step()
        return [p.detach().clone() for p in params], len(shared)

    new, n_shared = run(PCGrad)
    ref, _ = run(ReferencePCGrad)
    assert n_shared == 6  # the 0 term reaches head_b, the 2nd loss head_a: every parameter is shared
    for p, q in zip(new, ref):
        assert torch.equal(p, q)


# -- face-model constants ------------------------------------------------------------------------------
def test_const_is_cached_per_array_dtype_and_device():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    like32, like64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    first = geometry._const(arr, like32)
    assert geometry._const(arr, like32) is first and first.dtype == torch.float32
    other = geometry._const(arr, like64)
    assert other is not first and other.dtype == torch.float64 and geometry._const(arr, like64) is other
    assert np.shares_memory(arr, first.numpy()) is False  # a copy: the cache must not pin the array's memory
    same_values = arr.copy()  # equal content, distinct array: its own tensor
    assert geometry._const(same_values, like32) is not first
    assert isinstance(geometry._const(arr, np.zeros(1, np.float32)), np.ndarray)  # numpy: unchanged


def test_const_cache_forgets_collected_arrays_and_reused_ids():
    like = torch.zeros(1)
    before = len(geometry._TORCH_CONSTANTS)
    seen = {}
    for value in range(50):  # fresh arrays of one size: CPython soon reuses a freed one's id
        arr = np.full(3, float(value), np.float32)
        tensor = geometry._const(arr, like)
        assert tensor.tolist() == [float(value)] * 3  # never a dead array's tensor
        seen.setdefault(id(arr), 0)
        seen[id(arr)] += 1
        del arr, tensor
    gc.collect()
    assert max(seen.values()) > 1  # an id came back, so the check above meant something
    assert len(geometry._TORCH_CONSTANTS) == before  # entries go with their arrays


def test_const_made_in_inference_mode_serves_training():
    arr = np.ones((3, 2), np.float32)
    with torch.inference_mode():
        geometry._const(arr, torch.zeros(1))
    weights = torch.ones(4, 3, requires_grad=True)
    (weights @ geometry._const(arr, torch.zeros(1))).sum().backward()  # saves the constant for backward
    torch.testing.assert_close(weights.grad, torch.full((4, 3), 2.0))


def test_loss_terms_copy_no_face_model_data_after_the_first_call(fm, monkeypatch):
    batch, pred_w, teacher_raw, aux = _full_batch(fm)
    cfg = {**WEIGHTS, "param_loss": "vdc", "distill_loss": "wpdc"}
    loss_terms(pred_w, batch, fm, cfg, teacher_raw, aux=aux)
    made, real_asarray = [], torch.asarray
    monkeypatch.setattr(torch, "asarray", lambda *a, **k: made.append(type(a[0])) or real_asarray(*a, **k))
    loss_terms(pred_w, batch, fm, cfg, teacher_raw, aux=aux)
    assert made == []  # every face-model array came from the cache


# -- no host sync ---------------------------------------------------------------------------------------
class HostSync(AssertionError):
    pass


def _forbid_host_syncs(monkeypatch) -> None:
    """On the CPU, make the Python-visible ways of waiting for a device value raise: tensor
    truthiness, item / float / int, nonzero, and boolean-mask indexing (a sync on CUDA)."""
    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostSync(f"Tensor.{name} reads a device value on the host")
        return method

    for name in ("__bool__", "item", "__float__", "__int__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, refuse(name))
    get_item, set_item = torch.Tensor.__getitem__, torch.Tensor.__setitem__

    def boolean(index) -> bool:
        parts = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts)

    def getitem(self, index):
        if boolean(index):
            raise HostSync("boolean-mask indexing sizes its result on the host")
        return get_item(self, index)

    def setitem(self, index, value):
        if boolean(index):
            raise HostSync("boolean-mask indexing sizes its result on the host")
        return set_item(self, index, value)

    monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
    monkeypatch.setattr(torch.Tensor, "__setitem__", setitem)


@pytest.mark.parametrize("param_loss", ["wpdc", "vdc", "l2"])
def test_no_host_sync_patterns(fm, param_loss, monkeypatch):
    """The CPU stand-in for the CUDA check below: the step runs with every host read refused, and
    the reference (which syncs) is caught by the same guard."""
    cfg = {**WEIGHTS, "param_loss": param_loss, "distill_loss": param_loss}
    batch, pred_w, teacher_raw, aux = _scenario(fm, "mixed")
    pred_w.requires_grad_(True)
    surgery = PCGrad(torch.optim.SGD([pred_w], lr=0.1), seed=0)
    grads = _with_zero_rows()
    with monkeypatch.context() as guard:
        _forbid_host_syncs(guard)
        total = sum(weighted(loss_terms(pred_w, batch, fm, cfg, teacher_raw, aux=aux), cfg, pred_w))
        total.backward()
        surgery.project(grads)
        with pytest.raises(HostSync):
            reference_loss_terms(pred_w, batch, fm, cfg, teacher_raw, aux=aux)
        with pytest.raises(HostSync):
            ReferencePCGrad(surgery.optimizer, seed=0).project(grads)


# -- no host sync on a GPU -----------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the sync checks run on a GPU only")
@pytest.mark.parametrize("param_loss", ["wpdc", "vdc", "l2"])
def test_no_host_sync_on_cuda(fm, param_loss):
    cfg = {**WEIGHTS, "param_loss": param_loss, "distill_loss": param_loss}
    batch, pred_w, teacher_raw, aux = _scenario(fm, "mixed")
    dev = torch.device("cuda")
    batch = {k: v.to(dev) for k, v in batch.items()}
    aux = {k: v.to(dev) for k, v in aux.items()}
    pred_w, teacher_raw = pred_w.to(dev).requires_grad_(True), teacher_raw.to(dev)
    surgery = PCGrad(torch.optim.SGD([pred_w], lr=0.1), seed=0)
    grads = torch.randn(5, 1000, device=dev)
    grads[2] = 0.0

    def step():
        parts = weighted(loss_terms(pred_w, batch, fm, cfg, teacher_raw, aux=aux), cfg, pred_w)
        return sum(parts), surgery.project(grads)

    step()  # first call: face-model constants are copied to the device once, here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total, _ = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref_total, *_ = _total_and_grads(reference_loss_terms, pred_w.detach(), batch, fm, cfg, teacher_raw, aux)
    torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=1e-6)
