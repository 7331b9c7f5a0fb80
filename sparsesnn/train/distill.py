"""Knowledge distillation: teachers and distillation losses.

The student's objective (Hinton et al. 2015, with the divergence selectable)::

    L = (1 - lam) * CE(y, z_s) + lam * tau^2 * D(z_t, z_s)

on time-averaged logits ``z`` with softened distributions ``p = softmax(z / tau)``:

- ``forward``: ``D = KL(p_t || p_s) = sum p_t (log p_t - log p_s)`` (mean over the batch);
- ``reverse`` (the default for EvoKD): ``D = KL(p_s || p_t) = sum p_s (log p_s - log p_t)``: mode-seeking, the
  student puts its mass where the teacher is confident instead of covering all of the teacher's mass;
- ``reversed_roles``: the student distils with forward KL *and* an online teacher also learns from the student
  (its loss adds ``lam * tau^2 * KL(p_s || p_t)`` with the student's prediction as a fixed target), the "teacher
  learns from the student" setting of Yuan et al., CVPR 2020 (Re-KD). Needs ``source = "online"``.

Teachers: a sparsesnn run directory (a dense or sparse SNN, read from its ``config.toml`` and ``checkpoint.pt``);
any ``nn.Module`` from an importable factory ``"package.module:function"`` with a weights file (an ANN whose logits
we read: it sees the static batch, or the time-major batch with ``teacher_input = "time_major"``); or a model trained
online beside the student (a registry model name, same optimiser settings).

A frozen teacher's logits depend only on the sample when the training data is not randomly augmented; they are then
cached per sample index, so the teacher runs once per sample for the whole run; with augmentation it runs once per
sample per epoch (the cache is cleared every epoch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsesnn.train.losses import mean_over_time

DIVERGENCES = ("forward", "reverse", "reversed_roles")


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """``KL(p || q)`` between ``softmax(p_logits / tau)`` and ``softmax(q_logits / tau)``, mean over the batch."""
    log_p = F.log_softmax(p_logits / tau, dim=-1)
    log_q = F.log_softmax(q_logits / tau, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    divergence: str = "reverse",
    temperature: float = 4.0,
    weight: float = 0.5,
) -> torch.Tensor:
    """``(1 - lam) CE(y, z_s) + lam tau^2 D(z_t, z_s)`` on ``[B, C]`` logits (see the module docstring)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    t = teacher_logits.detach()
    if divergence == "reverse":
        d = kl_divergence(student_logits, t, temperature)
    else:  # forward, and the student's side of reversed roles
        d = kl_divergence(t, student_logits, temperature)
    return (1.0 - weight) * F.cross_entropy(student_logits, target) + weight * temperature**2 * d


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """Resolve ``"package.module:function"`` to a callable."""
    if ":" not in spec:
        raise ValueError(f"teacher factory must look like 'package.module:function', got {spec!r}")
    mod_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import teacher factory {spec!r}: {exc}") from None


class Distiller:
    """Computes the student's distillation loss and, for an online teacher, trains the teacher beside it.

    Args:
        teacher: the teacher module (moved to the student's device by the caller).
        teacher_input: maps ``(raw_batch, student_input)`` to the teacher's input.
        divergence, temperature, weight: the loss (module docstring).
        online_optimizer: the teacher's optimiser when it learns online (None: the teacher is frozen).
        cache: cache a frozen teacher's logits by sample index (only valid when inputs are not augmented).
    """

    def __init__(
        self,
        teacher: nn.Module,
        teacher_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        divergence: str = "reverse",
        temperature: float = 4.0,
        weight: float = 0.5,
        online_optimizer: torch.optim.Optimizer | None = None,
        cache: bool = True,
    ) -> None:
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
        if divergence == "reversed_roles" and online_optimizer is None:
            raise ValueError("divergence 'reversed_roles' needs a teacher trained online (source = 'online')")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.teacher = teacher
        self.teacher_input = teacher_input
        self.divergence = divergence
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.online_optimizer = online_optimizer
        self.cache_enabled = cache and online_optimizer is None
        self._cache: dict[int, torch.Tensor] = {}
        self.teacher_calls = 0  # samples the teacher has seen: for tests and cost accounting
        if online_optimizer is None:
            self.teacher.eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    @property
    def frozen(self) -> bool:
        return self.online_optimizer is None

    def start_epoch(self, inputs_are_deterministic: bool) -> None:
        """Called before each epoch: a cache of augmented inputs' logits is only valid within one epoch."""
        if not inputs_are_deterministic:
            self._cache.clear()

    def _frozen_logits(self, raw: torch.Tensor, student_in: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Teacher logits for the batch; with the cache on, only samples never seen before run the teacher."""
        keys = indices.tolist()
        missing = [i for i, k in enumerate(keys) if not (self.cache_enabled and k in self._cache)]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            sel = torch.tensor(missing, device=raw.device)
            sub_raw = raw.index_select(0, sel)
            sub_in = student_in.index_select(1, sel.to(student_in.device))  # time-major: batch is dim 1
            with torch.no_grad():
                logits = mean_over_time(self.teacher(self.teacher_input(sub_raw, sub_in))).float()
            self.teacher_calls += len(missing)
            fresh = dict(zip(missing, logits, strict=True))
            if self.cache_enabled:
                for i, row in fresh.items():
                    self._cache[keys[i]] = row.detach().cpu()
        rows = [fresh[i] if i in fresh else self._cache[k].to(student_in.device) for i, k in enumerate(keys)]
        return torch.stack(rows)

    def loss(
        self,
        student_out: torch.Tensor,
        target: torch.Tensor,
        raw: torch.Tensor,
        student_in: torch.Tensor,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        """The student's loss for one batch (and one optimiser step of an online teacher)."""
        z_s = mean_over_time(student_out)
        if self.frozen:
            z_t = self._frozen_logits(raw, student_in, indices)
        else:
            z_t = self._online_step(raw, student_in, target, z_s.detach())
        return distillation_loss(
            z_s, z_t, target, divergence=self.divergence, temperature=self.temperature, weight=self.weight
        )

    def _online_step(
        self, raw: torch.Tensor, student_in: torch.Tensor, target: torch.Tensor, z_s: torch.Tensor
    ) -> torch.Tensor:
        assert self.online_optimizer is not None
        self.teacher.train()
        z_t = mean_over_time(self.teacher(self.teacher_input(raw, student_in)))
        self.teacher_calls += int(target.shape[0])
        loss = F.cross_entropy(z_t, target)
        if self.divergence == "reversed_roles":
            loss = loss + self.weight * self.temperature**2 * kl_divergence(z_s, z_t, self.temperature)
        self.online_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.online_optimizer.step()
        return z_t.detach()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"teacher_calls": self.teacher_calls}
        if not self.frozen:
            assert self.online_optimizer is not None
            state["teacher"] = self.teacher.state_dict()
            state["optimizer"] = self.online_optimizer.state_dict()
        else:
            keys = sorted(self._cache)
            state["cache_keys"] = torch.tensor(keys, dtype=torch.long)
            state["cache_values"] = torch.stack([self._cache[k] for k in keys]) if keys else torch.zeros(0)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher_calls = int(state["teacher_calls"])
        if not self.frozen:
            assert self.online_optimizer is not None
            self.teacher.load_state_dict(state["teacher"])
            self.online_optimizer.load_state_dict(state["optimizer"])
        else:
            keys = state["cache_keys"].tolist()
            self._cache = {k: state["cache_values"][i] for i, k in enumerate(keys)}
