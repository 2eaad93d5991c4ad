import pytest
import torch
from torch import nn

from edgefa.models.multitask import MULTITASK_BACKBONES, TASK_DIMS, MultiTaskRegressor
from edgefa.models.registry import create_model, list_models
from edgefa.training.pcgrad import PCGrad


def test_multitask_models_are_registered():
    assert set(list_models("multitask_*")) == set(MULTITASK_BACKBONES)


# Table I of the paper; MobileNetV3's count includes timm's conv_head (576*1024 + 1024), which
# runs after global pooling, so the multitask model drops it
PAPER_PARAMS = {"multitask_mobilevit_s": 47_530_814, "multitask_mobilevitv2_100": 31_680_423,
                "multitask_mobilenetv3_small_100": 36_036_302 - 590_848}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_param_counts_match_the_paper(name):
    with torch.device("meta"):  # no allocation or init: counting only
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[name]


@pytest.mark.parametrize("name", sorted(MULTITASK_BACKBONES))
def test_forward_is_the_concat_of_the_task_heads(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert isinstance(model, MultiTaskRegressor)
    size = model.input_size
    assert size == (120 if "mobilenetv3" in name else 128)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x)
        tasks = model.forward_tasks(x)
    assert out.shape == (2, 62) and torch.isfinite(out).all()
    assert {k: v.shape[1] for k, v in tasks.items() if k in TASK_DIMS} == TASK_DIMS
    expected = torch.cat([tasks["pose"], tasks["shape"], tasks["expression"]], dim=1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(tasks["params"], expected)


def test_landmark_head_and_3dmm_landmarks(toy_face_model):
    torch.manual_seed(0)
    model = create_model("multitask_mobilevitv2_100", head_width=1.0, landmark_head=True).eval()
    with torch.no_grad():
        tasks = model.forward_tasks(torch.randn(2, 3, 128, 128), face_model=toy_face_model)
        out = model(torch.randn(2, 3, 128, 128))
    assert out.shape == (2, 62)  # the landmark head does not change the plain-regressor output
    assert tasks["landmarks"].shape == (2, 68, 3)
    assert tasks["landmarks_3dmm"].shape == (2, 68, 3) and tasks["euler"].shape == (2, 3)


def _pcgrad_on(g1, g2):
    w = torch.zeros(len(g1), requires_grad=True)
    g1, g2 = torch.tensor(g1), torch.tensor(g2)
    opt = PCGrad(torch.optim.SGD([w], lr=0.1), seed=0)
    opt.zero_grad()
    opt.pc_backward([g1 @ w, g2 @ w])
    return w.grad, g1, g2


def test_pcgrad_projects_conflicting_gradients():
    grad, g1, g2 = _pcgrad_on([1.0, 0.0], [-1.0, 1.0])
    g1p = g1 - (g1 @ g2) / (g2 @ g2) * g2  # [0.5, 0.5]
    g2p = g2 - (g2 @ g1) / (g1 @ g1) * g1  # [0, 1]
    torch.testing.assert_close(grad, g1p + g2p)
    torch.testing.assert_close(grad, torch.tensor([0.5, 1.5]))
    # after surgery neither projected gradient conflicts with the other task's original gradient
    assert g1p @ g2 >= -1e-7 and g2p @ g1 >= -1e-7
    opt = PCGrad(torch.optim.SGD([torch.zeros(1)], lr=0.1), seed=0)
    proj = opt.project(torch.stack([g1, g2]))
    assert proj[0] @ g2 >= -1e-7 and proj[1] @ g1 >= -1e-7


def test_pcgrad_leaves_agreeing_gradients_alone():
    grad, g1, g2 = _pcgrad_on([1.0, 0.5], [0.5, 2.0])
    assert g1 @ g2 > 0
    torch.testing.assert_close(grad, g1 + g2)


def test_pcgrad_task_specific_params_get_plain_gradients():
    shared = torch.tensor([1.0, -1.0], requires_grad=True)
    head1 = torch.tensor([2.0], requires_grad=True)
    head2 = torch.tensor([3.0], requires_grad=True)
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    opt = PCGrad(torch.optim.SGD([shared, head1, head2], lr=0.1), reduction="mean")
    opt.pc_backward([g1 @ shared + 5 * head1.sum(), g2 @ shared + 7 * head2.sum()])
    torch.testing.assert_close(shared.grad, torch.tensor([0.5, 1.5]) / 2)  # mean of the projections
    torch.testing.assert_close(head1.grad, torch.tensor([5.0]))
    torch.testing.assert_close(head2.grad, torch.tensor([7.0]))
    opt = PCGrad(torch.optim.SGD([shared, head1, head2], lr=0.1), shared_params=[])  # surgery off
    opt.pc_backward([g1 @ shared + 5 * head1.sum(), g2 @ shared + 7 * head2.sum()])
    torch.testing.assert_close(shared.grad, g1 + g2)


def test_pcgrad_training_step_updates_the_multitask_model():
    torch.manual_seed(0)
    model = create_model("multitask_mobilenetv3_small_100", head_width=0.25).train()
    opt = PCGrad(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), seed=0)
    x, target = torch.randn(4, 3, 120, 120), torch.randn(4, 62)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tasks = model.forward_tasks(x)
    targets = dict(zip(TASK_DIMS, target.split(list(TASK_DIMS.values()), dim=1)))
    losses = [nn.functional.mse_loss(tasks[t], targets[t]) for t in TASK_DIMS]
    opt.zero_grad()
    shared = opt.pc_backward(losses)
    assert {id(p) for p in shared} == {id(p) for p in model.backbone.parameters()}  # heads are per task
    opt.step()
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    for prefix in ("backbone.", "heads.pose.", "heads.shape.", "heads.expression."):
        assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix)), prefix
