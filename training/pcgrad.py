"""PCGrad: "Gradient Surgery for Multi-Task Learning" (Yu et al., NeurIPS 2020), as an optimizer wrapper.

    opt = PCGrad(torch.optim.SGD(model.parameters(), lr=..., momentum=0.9))
    opt.zero_grad()
    opt.pc_backward([loss_lmk, loss_pose, loss_param])
    opt.step()

For every task i the gradient over the shared parameters g_i is projected, against the other tasks
j in random order, onto the normal plane of the *original* g_j whenever they conflict:
``g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j`` if ``g_i . g_j < 0`` (Algorithm 1; the dot uses the
running, already projected g_i). The projected gradients are summed ("sum") or averaged ("mean") and
written to ``.grad``; parameters used by a single task (task heads) get the plain sum of their task
gradients, untouched by the surgery (and never averaged, as in the reference implementation).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


class PCGrad:
    def __init__(self, optimizer: torch.optim.Optimizer, shared_params: Iterable[torch.Tensor] | None = None,
                 reduction: str = "sum", seed: int | None = None):
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.optimizer = optimizer
        self.reduction = reduction
        # None: shared = every parameter that gets a gradient from more than one task (decided per call)
        self.shared_ids = None if shared_params is None else {id(p) for p in shared_params}
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)

    # -- optimizer delegation -------------------------------------------------------------------
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        return self.optimizer.step(closure)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    # -- gradient surgery -----------------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        seen, params = set(), []
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """(T, N) flat task gradients -> (T, N) projected gradients (Algorithm 1 of the paper).

        Whether g_i and g_j conflict is decided on the device (torch.where, both outcomes computed),
        not by an ``if`` on a tensor, so the host never waits for a GPU; a zero g_j never conflicts.
        The task order comes from the CPU generator, which needs no device value."""
        projected = grads.clone()
        n_tasks = grads.shape[0]
        sq_norms = (grads * grads).sum(dim=1)
        for i in range(n_tasks):
            g = projected[i]
            for j in torch.randperm(n_tasks, generator=self.generator).tolist():
                if j == i:
                    continue
                dot = torch.dot(g, grads[j])
                conflict = (dot < 0) & (sq_norms[j] != 0)
                g.copy_(torch.where(conflict, g - (dot / sq_norms[j]) * grads[j], g))
        return projected

    def pc_backward(self, losses: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-task gradients -> projection over the shared parameters -> ``.grad`` (overwritten).

        Returns the shared parameters (in the order they were flattened). Parameters no loss reaches
        keep their ``.grad`` as it was.
        """
        if not losses:
            raise ValueError("pc_backward needs at least one loss")
        params = self._params()
        per_task = []  # per task: list of grads (None where the task does not reach the parameter)
        for k, loss in enumerate(losses):
            per_task.append(torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1,
                                                allow_unused=True))
        users = [sum(g[n] is not None for g in per_task) for n in range(len(params))]
        if self.shared_ids is None:
            shared = [n for n in range(len(params)) if users[n] > 1]
        else:
            shared = [n for n in range(len(params)) if id(params[n]) in self.shared_ids and users[n] > 0]
        scale = 1.0 / len(losses) if self.reduction == "mean" else 1.0

        if shared:
            flat = torch.stack([torch.cat([(g[n] if g[n] is not None else torch.zeros_like(params[n])).reshape(-1)
                                           for n in shared]) for g in per_task])
            merged = self.project(flat).sum(dim=0) * scale
            offset = 0
            for n in shared:
                size = params[n].numel()
                params[n].grad = merged[offset:offset + size].view_as(params[n]).clone()
                offset += size
        shared_set = set(shared)
        for n, p in enumerate(params):
            if n in shared_set or users[n] == 0:
                continue
            p.grad = sum(g[n] for g in per_task if g[n] is not None)
        return [params[n] for n in shared]
