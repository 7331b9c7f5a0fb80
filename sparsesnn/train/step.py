"""One optimiser step as a run configures it: mixed precision, a compiled model, gradient scaling and clipping.

``run.precision``
    ``"fp32"`` (no autocast), ``"bf16"`` or ``"fp16"``: the forward pass and the loss run under
    ``torch.autocast(device, dtype)``; parameters, optimiser moments and gradients stay float32. The neurons run
    natively in the autocast dtype (:mod:`sparsesnn.neuron.kernels`). fp16 adds a ``torch.amp.GradScaler`` (loss scaled
    before backward, gradients unscaled before clipping, the step skipped when they overflow), whose state is part of
    the checkpoint so a resumed run scales exactly as an unbroken one. bf16 has float32's exponent range and needs no
    scaler.
``run.compile``
    The whole training model (the DDP wrapper, when there is one) under ``torch.compile(mode=run.compile_mode,
    dynamic=False)``: one compiled graph for the forward pass and one for the backward pass per input shape (the
    last, smaller batch of an epoch adds one). Masks are buffers that the structure learner updates in place and that
    the forward pass never reads (absent weights are held at exactly zero), so rewiring, SD-SNN's neuron pruning, the
    PQ index's rounds and LTH's rewinds change no graph and cause no recompilation. ``reduce-overhead`` replays the
    compiled graphs as CUDA graphs. Evaluation runs the uncompiled model (the same parameters).

The step is split where the trainer reads the loss: :meth:`backward` queues the (scaled) backward pass, the trainer
then reads the loss once (one host synchronisation per step, while the device works through the backward pass) and
refuses a non-finite one before anything changes, and :meth:`apply` unscales, clips and steps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

Precision = Literal["fp32", "bf16", "fp16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``run.precision`` (None for fp32: no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def check_precision_supported(precision: str, device: torch.device) -> None:
    """Raise a ``ValueError`` naming the problem when ``device`` cannot autocast to ``precision``."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"run.precision = 'bf16': {torch.cuda.get_device_name(device)} has no bf16 support; use fp16")
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"run.precision = {precision!r}: torch cannot autocast on {device.type!r}")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast region of ``run.precision`` on ``device`` for a forward pass and its loss (a no-op for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class TrainStep:
    """The forward pass, backward pass and optimiser step of ``model`` under a run's precision and compile settings.

    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> step = TrainStep(net, torch.optim.SGD(net.parameters(), lr=0.1), device=torch.device("cpu"), precision="bf16")
    >>> with step.autocast():
    ...     out = step.forward(torch.ones(4, 3))
    >>> out.dtype
    torch.bfloat16
    >>> step.backward(out.float().square().mean()); step.apply()
    True
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        precision: Precision = "fp32",
        compile: bool = False,
        compile_mode: CompileMode = "default",
        grad_clip: float = 0.0,
        clip_parameters: Iterable[torch.Tensor] | None = None,
    ) -> None:
        check_precision_supported(precision, device)
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.precision = precision
        self.dtype = autocast_dtype(precision)
        self.grad_clip = float(grad_clip)
        self.clip_parameters = list(clip_parameters) if clip_parameters is not None else list(model.parameters())
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.compiled = compile
        self.compile_mode = compile_mode
        self.forward_module: nn.Module = (
            torch.compile(model, mode=compile_mode, dynamic=False) if compile else model  # type: ignore[assignment]
        )
        self.first_step_s: float | None = None  # wall time of the first step, compilation included (compile only)
        self._first_started: float | None = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast region of the forward pass and the loss (a no-op for fp32)."""
        return autocast(self.device, self.precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The (compiled) model's output; call inside :meth:`autocast`."""
        if self.compiled and self.first_step_s is None and self._first_started is None:
            self._first_started = time.perf_counter()
        return self.forward_module(x)  # type: ignore[no-any-return]

    def backward(self, loss: torch.Tensor) -> None:
        """Queue the backward pass of ``loss`` (scaled for fp16)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def apply(self) -> bool:
        """Unscale and clip the gradients, step the optimiser, update the scale; False when fp16 gradients overflowed
        and the step was skipped."""
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.clip_parameters, self.grad_clip)
        stepped = True
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # the scale only drops when the step was skipped
        else:
            self.optimizer.step()
        if self._first_started is not None and self.first_step_s is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.first_step_s = time.perf_counter() - self._first_started
        return stepped

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scaler = state.get("scaler", {})
        if self.scaler.is_enabled() and scaler:
            self.scaler.load_state_dict(scaler)
