"""Neurons as plugins: the registry of neuron kinds and the spec a model builds its neurons from.

A neuron kind is a spiking ``nn.Module`` class registered under a name with :func:`register_neuron`. Every spec
carries the LIF family's settings (``tau``, ``v_threshold``, ``v_reset``, ``decay_input``, ``detach_reset``,
``surrogate``, ``backend``: the ``[neuron]`` section); a kind with settings of its own declares them in a settings
model (``[neuron.params]``, validated when the config is read) and builds itself with
``from_spec(spec, settings)``. Registration also declares the class spiking, so firing-rate metrics, SOP counts and
compaction see it (:func:`sparsesnn.neuron.spiking.is_spiking`).

``lif`` (:class:`~sparsesnn.neuron.lif.LIF`) and ``plif`` (:class:`~sparsesnn.neuron.lif.PLIF`, learnable tau) are
registered here; docs/architecture.md ("Neurons as plugins") adds an adaptive LIF in one file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import Field, model_validator
from torch import nn

from sparsesnn.core.registry import Registry
from sparsesnn.core.settings import Settings, validate_settings
from sparsesnn.neuron.kernels.op import Backend
from sparsesnn.neuron.lif import LIF, PLIF
from sparsesnn.neuron.spiking import SPIKING_ATTRIBUTE
from sparsesnn.neuron.surrogates import SURROGATES, ATan, Surrogate, make_surrogate


class NeuronFamilySettings(Settings):
    """What every neuron kind's spec carries, declared once: the LIF family's settings (a kind may ignore some). The
    ``[neuron]`` section of a config is this plus the kind and its own settings."""

    tau: float = Field(2.0, gt=1.0, description="membrane time constant, in time steps")
    v_threshold: float = Field(1.0, description="firing threshold")
    v_reset: float = Field(0.0, description="reset potential of a hard reset")
    soft_reset: bool = Field(False, description="subtract the threshold instead of resetting to v_reset")
    decay_input: bool = Field(True, description="scale the input by 1/tau too")
    detach_reset: bool = Field(False, description="cut the reset out of the gradient")
    surrogate: Literal[tuple(SURROGATES)] = Field("atan", description="surrogate gradient of the spike")  # type: ignore[valid-type]
    surrogate_param: float | None = Field(None, gt=0.0, description="alpha / width / beta / gamma; None = the default")
    backend: Literal["auto", "compiled", "eager"] = Field("auto", description="the fused LIF kernel: compiled or eager")

    @model_validator(mode="after")
    def _reset_below_threshold(self) -> NeuronFamilySettings:
        if not self.soft_reset and self.v_reset >= self.v_threshold:
            raise ValueError(f"v_reset ({self.v_reset}) must be below v_threshold ({self.v_threshold})")
        return self

    def spec(self, kind: str = "lif", params: Mapping[str, Any] | None = None) -> NeuronSpec:
        """The spec a model builds its neurons from (the surrogate built, a soft reset as ``v_reset = None``)."""
        return NeuronSpec(
            kind=kind,
            tau=self.tau,
            v_threshold=self.v_threshold,
            v_reset=None if self.soft_reset else self.v_reset,
            decay_input=self.decay_input,
            detach_reset=self.detach_reset,
            surrogate=make_surrogate(self.surrogate, self.surrogate_param),
            backend=self.backend,
            params=dict(params or {}),
        )


class NeuronSettings(Settings):
    """A neuron kind's own settings beyond the LIF family's (none for ``lif`` and ``plif``)."""


class NeuronKind(Protocol):
    """What the registry holds: a spiking module class with its settings model and a constructor from a spec."""

    Settings: ClassVar[type[NeuronSettings]]

    @classmethod
    def from_spec(cls, spec: NeuronSpec, settings: Any) -> nn.Module: ...


NEURONS: Registry[type[NeuronKind]] = Registry("neuron kind")  # type: ignore[type-var]

N = TypeVar("N", bound=type)


#: ``to_nir(module, name, shape, dt, nir) -> node``: a neuron kind's NIR mapping (``shape``: one sample's neurons,
#: ``dt``: seconds per time step, ``nir``: the nir package)
NIRMapping = Callable[[Any, str, Sequence[int], float, Any], Any]


def register_neuron(
    name: str, settings: type[NeuronSettings] = NeuronSettings, to_nir: NIRMapping | None = None
) -> Callable[[N], N]:
    """Class decorator: register a spiking neuron class under ``name`` (its ``[neuron] kind``), in one place: its
    settings (``Settings = settings``), its constructor from a spec (the class's ``from_spec(spec, settings)``) and
    its NIR mapping (``to_nir``; without one, NIR export refuses the kind by name). It is declared spiking."""

    def add(cls: N) -> N:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_neuron({name!r}) decorates an nn.Module subclass, got {cls!r}")
        if not callable(getattr(cls, "from_spec", None)):
            raise TypeError(f"neuron kind {name!r}: {cls.__name__} needs a classmethod from_spec(spec, settings)")
        cls.Settings = settings  # type: ignore[attr-defined]
        if to_nir is not None:
            cls.to_nir = staticmethod(to_nir)  # type: ignore[attr-defined]
        setattr(cls, SPIKING_ATTRIBUTE, True)
        NEURONS.register(name)(cls)  # type: ignore[arg-type]
        return cls

    return add


@dataclass(frozen=True)
class NeuronSpec:
    """How to build the spiking neurons of a model: a registered ``kind``, the LIF family's settings (``v_reset =
    None`` means soft reset) and the kind's own ``params``."""

    kind: str = "lif"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: Surrogate = field(default_factory=ATan)
    backend: Backend = "auto"
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """One neuron of this spec (the kind's settings validated from ``params``)."""
        cls = NEURONS[self.kind]
        return cls.from_spec(self, validate_settings(cls.Settings, f"neuron {self.kind!r}", dict(self.params)))

    def with_(self, **changes: object) -> NeuronSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


# LIF and PLIF build themselves from a spec (LIF.from_spec); registering them adds their settings and name. Their NIR
# mapping belongs to the NIR writer (sparsesnn.interop.nir_write), which knows the LIF family itself.
register_neuron("lif")(LIF)
register_neuron("plif")(PLIF)
