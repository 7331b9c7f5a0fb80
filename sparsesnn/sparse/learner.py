"""The structure learner: the lifecycle every method shares.

``prepare`` (at construction) picks the prunable layers, attaches masks and draws the initial topology; ``step``
(after every optimiser step) rewires when due and returns whether the topology changed; ``on_epoch_end`` (after
every epoch) serves epoch-level methods; ``state_dict`` / ``load_state_dict`` hold counters, the random generator
and per-synapse state so a resumed run continues bit for bit (the masks themselves are buffers in
``model.state_dict()``); ``summary`` prints a per-layer table; ``finalize`` bakes the masks in and removes every hook.

Subclasses override :meth:`update` (a step-level topology change), :meth:`on_epoch_end`, :meth:`wants_dense_grad`
and :meth:`extra_state` / :meth:`load_extra_state`.

The rule every method keeps by default: **no topology change after the last optimiser step of a run**. A step-level
change never falls on the last step (``total_steps``), an epoch-level one never on the last epoch end
(``total_epochs``), so the saved and exported model is a structure the optimiser has trained. A method whose paper
does otherwise keeps that as an explicit option (SD-SNN's ``final_change``); the engine warns when a run ends right
after a change (:attr:`StructureLearner.last_change_step` and ``on_epoch_end``'s return value tell it).

**A learner cannot be misused silently.** One loop serves every method::

    learner = METHODS[name](model, optimizer, density=0.1, steps_per_epoch=len(loader), total_epochs=epochs)
    for epoch in range(epochs):
        for x, y in loader:
            ...; optimizer.step(); learner.step()
        learner.on_epoch_end(epoch)

The budget is any two of ``total_steps``, ``steps_per_epoch`` and ``total_epochs`` (the third is derived,
:func:`resolve_budget`). A method whose schedule needs what was not given, or whose schedule would never change the
topology within the budget, raises ``ValueError`` at construction, naming the argument (:meth:`schedule_problem`).
An epoch-level method warns as soon as a step falls into an epoch whose predecessor never got its
``on_epoch_end``, and ``on_epoch_end`` warns when no ``step()`` came since the previous one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from sparsesnn.core.collectives import all_reduce_mean_
from sparsesnn.core.settings import validate_settings
from sparsesnn.core.state import generator_state
from sparsesnn.sparse.budget import layer_costs, weight_uses
from sparsesnn.sparse.granularity import Grouping
from sparsesnn.sparse.masks import (
    MaskedLayer,
    MaskSet,
    layer_densities,
    masks_digest,
    prunable_layers,
    select_layers,
)
from sparsesnn.sparse.settings import LearnerSettings

#: when a method changes the topology: never, after optimiser steps, or at epoch ends
ScheduleUnit = Literal["never", "steps", "epochs"]


def resolve_budget(total_steps: int, steps_per_epoch: int, total_epochs: int) -> tuple[int, int, int]:
    """``(total_steps, steps_per_epoch, total_epochs)`` with the one that is missing (0) derived from the other two.

    ``total_steps = steps_per_epoch * total_epochs``; a derived ``steps_per_epoch`` or ``total_epochs`` is rounded
    up (a last, shorter epoch). All three given must agree. Fewer than two given: the unknown ones stay 0.
    """
    values = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "total_epochs": total_epochs}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0 (0: unknown), got {value!r}")
    if total_steps and steps_per_epoch and total_epochs:
        if not (total_epochs - 1) * steps_per_epoch < total_steps <= steps_per_epoch * total_epochs:
            raise ValueError(
                f"total_steps = {total_steps} does not fit steps_per_epoch = {steps_per_epoch} x total_epochs = "
                f"{total_epochs}; give two of the three and the third is derived"
            )
    elif steps_per_epoch and total_epochs:
        total_steps = steps_per_epoch * total_epochs
    elif total_steps and total_epochs:
        steps_per_epoch = math.ceil(total_steps / total_epochs)
    elif total_steps and steps_per_epoch:
        total_epochs = math.ceil(total_steps / steps_per_epoch)
    return total_steps, steps_per_epoch, total_epochs


@dataclass(frozen=True)
class LayerChange:
    """What one topology change did to one layer, as the method decided it (not read back from the mask).

    ``dropped``: the synapses it removed (all were active before); ``grown``: those it added (all were absent before
    the change, so a synapse dropped in this change is never among them). ``mask_after == (mask_before & ~dropped)
    | grown``. Boolean tensors shaped like the layer's weight.
    """

    dropped: torch.Tensor
    grown: torch.Tensor


class StructureLearner:
    """Base learner: a fixed random sparse topology (what the ``static`` method is) unless a subclass rewires it.

    Args:
        model: any ``nn.Module``; its Conv/Linear layers are candidates.
        optimizer: the optimiser whose moments are kept zero for absent synapses (optional for inference).
        settings: a validated ``Settings`` object of this class, or instead keyword settings (validated through it):
            ``density``, ``distribution``, ``granularity`` and ``block_size`` (the groups pruned and grown together,
            :mod:`sparsesnn.sparse.granularity`), ``dense_first``, ``dense_last``, ``include``, ``exclude`` (layer
            selection, :func:`select_layers`), ``seed``, and the budget ``total_steps``, ``steps_per_epoch``,
            ``total_epochs`` (give two, the third is derived by :func:`resolve_budget`; what a method's schedule
            needs is required, :meth:`schedule_problem`), plus the method's own (:mod:`sparsesnn.sparse.settings`).

    Raises:
        ValueError: a bad setting, a missing budget the method needs, or a schedule that would never fire.
    """

    name = "static"
    uses_masks = True
    #: the settings model: every keyword this learner takes (subclasses name their own)
    Settings: ClassVar[type[LearnerSettings]] = LearnerSettings
    #: training starts dense and prunes towards the target (GMP, LTH); otherwise it starts at the target density
    starts_dense: ClassVar[bool] = False
    #: the engine restarts the learning-rate schedule every this many epochs (LTH's rounds); 0: never
    cycle_epochs: int = 0
    #: the method is defined with a distillation objective (EvoKD): the engine refuses it without ``[distill]``
    requires_distillation: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        settings: LearnerSettings | None = None,
        *,
        example_input: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        if settings is None:
            settings = validate_settings(type(self).Settings, self.name, kwargs)
        elif kwargs:
            raise TypeError(f"{self.name}: give settings= or keyword settings, not both (got {sorted(kwargs)})")
        elif not isinstance(settings, type(self).Settings):
            raise TypeError(
                f"{self.name}: settings must be a {type(self).Settings.__name__}, got {type(settings).__name__}"
            )
        s = self.settings = settings
        self.model = model
        self.optimizer = optimizer
        self.density_target = s.density
        self.distribution = s.distribution
        self.total_steps, self.steps_per_epoch, self.total_epochs = resolve_budget(
            s.total_steps, s.steps_per_epoch, s.total_epochs
        )
        self.generator = torch.Generator().manual_seed(s.seed)
        self.steps = 0
        self.epochs_seen = 0
        #: the optimiser step after which :meth:`update` last changed the topology (0: never)
        self.last_change_step = 0
        #: per layer, the synapses the most recent topology change dropped and grew (empty: none yet, or a method
        #: that does not report; not kept in checkpoints)
        self.last_change: dict[str, LayerChange] = {}
        self.masks: MaskSet | None = None
        self._dense_grads: dict[str, torch.Tensor] = {}
        self._steps_at_epoch_end = 0  # ``steps`` when on_epoch_end was last called
        self._warned: set[str] = set()  # misuse warnings already given (once each)
        self.configure(s)
        problem = self.schedule_problem()
        if problem is not None:
            raise ValueError(f"{self.name}: {problem}")
        self.budget = s.budget
        #: per Conv/Linear of the model, the uses of one weight per sample (:func:`weight_uses` on
        #: ``example_input``); None without an example input (then no MAC figures, and no MAC budget)
        self.weight_uses: dict[str, float] | None = None
        if example_input is not None:
            self.weight_uses = weight_uses(model, example_input, [n for n, _ in prunable_layers(model)])
        if self.uses_masks:
            layers = select_layers(model, s.include, s.exclude, s.dense_first, s.dense_last)
            self.masks = MaskSet(layers, optimizer, model)
            self.masks.grad_sink = self._sink_grad
            #: what each masked layer weighs in the density budget: weights, or dense MACs (``budget``)
            self.layer_costs = self._layer_costs()
            start = 1.0 if self.starts_dense else self.density_target
            self.targets = dict(
                zip(
                    [layer.name for layer in self.masks.layers],
                    layer_densities(
                        [layer.weight for layer in self.masks.layers], self.density_target, s.distribution,
                        self.layer_costs,
                    ),
                    strict=True,
                )
            )  # fmt: skip
            self.init_masks(start)
        self._arm_capture()
        self.prepared()

    def configure(self, settings: LearnerSettings) -> None:
        """Take a method's own settings (called by the constructor before the schedule is checked and masks are
        attached); subclasses set their attributes here and call ``super().configure(settings)``."""

    def prepared(self) -> None:
        """Called last by the constructor, once the masks and the initial topology exist: a method's per-layer state
        (SD-SNN's ranges, LTH's rewind point) starts here."""

    def _layer_costs(self) -> list[float]:
        """What each masked layer weighs in the density budget (:func:`~sparsesnn.sparse.budget.layer_costs`)."""
        uses = None if self.weight_uses is None else [self.weight_uses[layer.name] for layer in self.layers]
        return layer_costs([layer.numel() for layer in self.layers], uses, self.budget)

    # -- topology ---------------------------------------------------------------------------------------------------
    @property
    def layers(self) -> list[MaskedLayer]:
        return self.masks.layers if self.masks is not None else []

    def grouping(self, layer: MaskedLayer) -> Grouping:
        """The groups ``layer``'s synapses are pruned and grown in (the ``granularity`` and ``block_size``
        settings; :mod:`sparsesnn.sparse.granularity`). The initial masks draw ``round(d_l * n_groups_l)`` whole
        groups of layer ``l`` at density ``d_l`` (:meth:`Grouping.random_mask`; at ``weight`` granularity exactly
        the former ``round(d_l * n_l)`` weights, with the same random draws)."""
        return Grouping(tuple(layer.weight.shape), self.settings.granularity, self.settings.block_size)

    def init_masks(self, density: float) -> None:
        """Draw random masks with ``density`` spread over layers by ``self.distribution`` (exact counts per layer)."""
        assert self.masks is not None
        dens = layer_densities([layer.weight for layer in self.layers], density, self.distribution, self.layer_costs)
        for layer, d in zip(self.layers, dens, strict=True):
            self.masks.set_mask(layer, self.grouping(layer).random_mask(d, self.generator, layer.mask.device))

    # -- schedule ---------------------------------------------------------------------------------------------------
    @property
    def schedule_unit(self) -> ScheduleUnit:
        """When this method changes the topology: "never" (dense, static), "steps" or "epochs"."""
        return "never"

    def schedule_problem(self) -> str | None:
        """Why this learner's schedule cannot run as configured (a missing budget, or no change within it), or None.

        Called at construction (subclasses set their settings before the base constructor runs); a message names
        the argument to give or change."""
        return None

    def budget_problem(self, what: str) -> str | None:
        """The message for a schedule that needs the budget and lacks it (:meth:`schedule_problem` helper).

        A step-level schedule needs ``total_steps``; an epoch-level one needs ``total_epochs`` and
        ``steps_per_epoch`` (to tell when an ``on_epoch_end`` call was forgotten)."""
        if self.schedule_unit == "steps" and not self.total_steps:
            return (
                f"{what} is planned over the run's optimiser steps, but the budget is unknown: pass total_steps= "
                "(or steps_per_epoch= and total_epochs=)"
            )
        if self.schedule_unit == "epochs" and not (self.total_epochs and self.steps_per_epoch):
            missing = [k for k in ("total_epochs", "steps_per_epoch") if not getattr(self, k)]
            return (
                f"{what} runs in on_epoch_end(epoch) and is planned over the run's epochs, but "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} unknown: pass steps_per_epoch= "
                "and total_epochs= (or total_steps= with one of them)"
            )
        return None

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def step(self) -> bool:
        """Call after every ``optimizer.step()``. Returns True when the topology changed. First restores the masks'
        invariant (absent weights exactly 0) wherever the step wrote, also for an optimiser the learner was not
        given (whose moments it cannot zero)."""
        self.steps += 1
        if self.masks is not None:  # absent weights back to zero, whichever optimiser stepped (one not given too)
            self.masks.restore()
        self._check_epoch_hook()
        for grad in self._dense_grads.values():  # several processes: every rank decides on the same gradient
            all_reduce_mean_(grad)
        self.before_update()
        changed = self.update() if self.masks is not None else False
        if changed:
            self.last_change_step = self.steps
        self._dense_grads.clear()
        self._arm_capture()
        return changed

    def before_update(self) -> None:
        """Hook run every step after the captured dense gradients are final (averaged over ranks)."""
        return None

    def update(self) -> bool:
        """Step-level topology change; the base learner keeps its topology fixed."""
        return False

    def on_epoch_end(self, epoch: int) -> bool:
        """Call after each training epoch (``epoch`` counts from 0). Returns True when the topology changed."""
        self._note_epoch_end(epoch)
        return False

    def _note_epoch_end(self, epoch: int) -> None:
        """Count the epoch end; warn (once) when no ``step()`` came since the previous one."""
        if self.steps == self._steps_at_epoch_end and self.schedule_unit != "never":
            self._warn_once(
                "no-steps",
                f"{self.name}: on_epoch_end({epoch}) with no learner.step() since the previous epoch end; call "
                "learner.step() after every optimizer.step()",
            )
        self._steps_at_epoch_end = self.steps
        self.epochs_seen = epoch + 1

    def _check_epoch_hook(self) -> None:
        """Warn (once) when a step falls into an epoch whose predecessor never got ``on_epoch_end``, and when the
        steps run past ``total_steps`` (the schedules were planned for that many)."""
        if self.schedule_unit == "epochs" and self.steps_per_epoch:
            ended = (self.steps - 1) // self.steps_per_epoch  # epochs complete before the one this step is in
            if self.epochs_seen < ended:
                self._warn_once(
                    "epoch-hook",
                    f"{self.name} changes the topology in on_epoch_end(epoch), but step {self.steps} lies in epoch "
                    f"{ended} (0-based; steps_per_epoch = {self.steps_per_epoch}) and on_epoch_end was called for "
                    f"{self.epochs_seen} epoch(s): call learner.on_epoch_end(epoch) after every epoch",
                )
        if self.total_steps and self.steps > self.total_steps and self.schedule_unit != "never":
            self._warn_once(
                "over-budget",
                f"{self.name}: learner.step() called {self.steps} times, beyond total_steps = {self.total_steps}; "
                "its schedule was planned for that budget",
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def wants_dense_grad(self, step: int) -> bool:
        """Whether the backward pass of optimiser step number ``step`` (1-based) must capture dense gradients."""
        return False

    def _arm_capture(self) -> None:
        if self.masks is not None:
            self.masks.capture = self.wants_dense_grad(self.steps + 1)

    def _sink_grad(self, name: str, grad: torch.Tensor) -> None:
        prev = self._dense_grads.get(name)
        self._dense_grads[name] = grad.clone() if prev is None else prev + grad

    # -- state ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": self.steps,
            "epochs_seen": self.epochs_seen,
            "steps_at_epoch_end": self._steps_at_epoch_end,
            "last_change_step": self.last_change_step,
            "generator": self.generator.get_state(),
            "masks": {layer.name: layer.mask.clone() for layer in self.layers},
            "neurons": {layer.name: layer.neuron_mask.clone() for layer in self.layers},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, wherever its tensors were read to: the generator state becomes a CPU
        byte tensor again, masks and per-synapse state go to their layers' devices."""
        if state.get("name") != self.name:
            raise ValueError(f"learner state is for method {state.get('name')!r}, not {self.name!r}")
        self.steps = int(state["steps"])
        self.epochs_seen = int(state["epochs_seen"])
        self._steps_at_epoch_end = int(state.get("steps_at_epoch_end", self.steps))
        self.last_change_step = int(state.get("last_change_step", 0))  # absent from checkpoints before it existed
        self.generator.set_state(generator_state(state["generator"]))
        saved = state["masks"]
        if self.masks is not None:
            names = {layer.name for layer in self.layers}
            if set(saved) != names:
                raise ValueError(f"learner state masks {sorted(saved)} do not match the model's layers {sorted(names)}")
            for layer in self.layers:
                self.masks.set_neuron_mask(layer, state["neurons"][layer.name].to(layer.mask.device))
                self.masks.set_mask(layer, saved[layer.name].to(layer.mask.device))
        self.load_extra_state(state["extra"])
        self._arm_capture()

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    # -- reporting --------------------------------------------------------------------------------------------------
    def topology_digest(self) -> int:
        """A digest of every synapse and neuron mask: equal on all ranks when the topologies agree."""
        return masks_digest([m for layer in self.layers for m in (layer.mask, layer.neuron_mask)])

    def density(self) -> float:
        """Active fraction over the masked layers (1.0 for a dense model)."""
        return self.masks.density() if self.masks is not None else 1.0

    def layer_table(self) -> list[dict[str, Any]]:
        """One row per Conv/Linear of the model: shape, active/total synapses, density, output neurons alive."""
        masked = {layer.name: layer for layer in self.layers}
        rows = []
        for name, module in prunable_layers(self.model):
            weight = module.weight
            layer = masked.get(name)
            mask = layer.mask if layer is not None else torch.ones_like(weight, dtype=torch.bool)
            alive = mask.reshape(mask.shape[0], -1).any(1)
            if layer is not None:
                alive &= layer.neuron_mask
            active = int(mask.sum())
            row = {
                "layer": name,
                "shape": list(weight.shape),
                "masked": layer is not None,
                "active": active,
                "total": mask.numel(),
                "density": active / mask.numel(),
                "neurons_alive": int(alive.sum()),
                "neurons": int(mask.shape[0]),
            }
            if self.weight_uses is not None:  # MACs per sample: every weight is used weight_uses[name] times
                uses = self.weight_uses[name]
                row.update(macs=mask.numel() * uses, live_macs=active * uses)
            rows.append(row)
        return rows

    def metrics(self) -> dict[str, Any]:
        rows = self.layer_table()
        total = sum(r["total"] for r in rows)
        out: dict[str, Any] = {
            "density": self.density(),
            "density_all": sum(r["active"] for r in rows) / total if total else 1.0,
            "layer_density": {r["layer"]: r["density"] for r in rows if r["masked"]},
        }
        if self.weight_uses is not None:
            out.update(self.mac_densities(rows))
        return out

    def mac_densities(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The fraction of dense multiply-accumulates per sample that survives: ``mac_density`` over the masked
        layers (what ``budget = "macs"`` holds at ``density``), ``mac_density_all`` over every Conv/Linear, and
        ``layer_macs`` (live MACs per sample of each layer). Empty without :attr:`weight_uses`."""
        if self.weight_uses is None:
            return {}
        rows = self.layer_table() if rows is None else rows
        masked = [r for r in rows if r["masked"]]

        def ratio(subset: list[dict[str, Any]]) -> float:
            total = sum(r["macs"] for r in subset)
            return sum(r["live_macs"] for r in subset) / total if total else 1.0

        return {
            "mac_density": ratio(masked) if masked else 1.0,
            "mac_density_all": ratio(rows),
            "layer_macs": {r["layer"]: r["live_macs"] for r in rows},
        }

    def parameter_count(self) -> dict[str, int]:
        """The whole network's parameters: ``total`` counts every element of every parameter tensor of the model
        (weights, biases, norm and neuron parameters), ``live`` the same with each masked weight counted by its live
        synapses (:meth:`layer_table`'s ``active``; a pruned neuron's zeroed bias / norm entries still count, as
        they do until :func:`~sparsesnn.sparse.shrink.compact` removes them). Buffers (masks, running statistics)
        are not parameters and are not counted."""
        total = sum(p.numel() for p in self.model.parameters())
        absent = sum(r["total"] - r["active"] for r in self.layer_table() if r["masked"])
        return {"live": total - absent, "total": total}

    def summary(self) -> str:
        """A per-layer table in plain text, headed by both densities (over the masked layers, and over every
        Conv/Linear, dense ones included: a dense first and last layer can hold most of the weights), ending with
        the whole network's live parameter count."""
        rows = self.layer_table()
        macs = self.weight_uses is not None
        head = f"{'layer':<32} {'shape':<20} {'active/total':>22} {'density':>8} {'neurons':>13}"
        if macs:
            head += f" {'live/dense MACs per sample':>30}"
        n_dense = sum(not r["masked"] for r in rows)
        metrics = self.metrics()
        headline = (
            f"{self.name} learner, density {self.density():.4f} over the {len(rows) - n_dense} masked layers, "
            f"{metrics['density_all']:.4f} over all {len(rows)} Conv/Linear layers ({n_dense} dense)"
        )
        lines = [headline]
        if macs:
            lines.append(
                f"MAC density {metrics['mac_density']:.4f} over the masked layers, {metrics['mac_density_all']:.4f} "
                f"over all (the density budget counts {'MACs' if self.budget == 'macs' else 'parameters'}; within "
                "a layer the MAC density equals the weight density)"
            )
        lines += [head, "-" * len(head)]
        for r in rows:
            tag = "" if r["masked"] else " (dense)"
            line = (
                f"{r['layer'] + tag:<32} {'x'.join(map(str, r['shape'])):<20} "
                f"{r['active']:>10,}/{r['total']:<11,} {r['density']:>8.4f} {r['neurons_alive']:>6}/{r['neurons']:<6}"
            )
            if macs:
                line += f" {round(r['live_macs']):>14,}/{round(r['macs']):<15,}"
            lines.append(line)
        params = self.parameter_count()
        lines.append("-" * len(head))
        lines.append(
            f"whole network: {params['live']:,} live parameters of {params['total']:,} (every parameter: weights, "
            "biases, norm and neuron parameters; masked weights counted by their live synapses)"
        )
        return "\n".join(lines)

    def finalize(self) -> nn.Module:
        """Bake masks into the weights, remove hooks and mask buffers; returns the (plain) model."""
        if self.masks is not None:
            self.masks.remove()
            self.masks = None
        return self.model


class DenseLearner(StructureLearner):
    """No masks at all: the dense baseline runs through the same engine path."""

    name = "dense"
    uses_masks = False
