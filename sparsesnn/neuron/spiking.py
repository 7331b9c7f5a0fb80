"""Which modules are spiking neurons: a declaration (:func:`spiking_neuron`, :func:`mark_spiking`, or the
``sparsesnn_spiking`` attribute, which the library's LIF family and every registered neuron kind set), or a peer
library's neuron recognised by base-class name. Firing rates, SOPs, NIR export and compaction ask :func:`is_spiking`."""

from __future__ import annotations

from typing import TypeVar

from torch import nn

#: base classes of the spiking neurons of peer libraries (SpikingJelly, snnTorch, Norse), recognised by name so
#: that none of them has to be installed
FOREIGN_NEURON_BASES = frozenset({"BaseNode", "SpikingNeuron", "LIFBoxCell", "LIFCell", "LIF"})


#: the attribute that declares a module spiking (True) or not (False), on its class or on one instance; it wins over
#: every other rule of :func:`is_spiking`
SPIKING_ATTRIBUTE = "sparsesnn_spiking"

M = TypeVar("M", bound=type)


def spiking_neuron(cls: M) -> M:
    """Class decorator: declare a user's neuron class spiking, so that metrics (firing rates, SOPs of the layer
    it drives), NIR export checks and compaction see it. Its output (or the first element of a tuple output) must
    be its spikes. The same as setting the class attribute ``sparsesnn_spiking = True``::

        @sparsesnn.spiking_neuron
        class MyNeuron(nn.Module):
            def forward(self, x): ...
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"spiking_neuron decorates an nn.Module subclass, got {cls!r}")
    setattr(cls, SPIKING_ATTRIBUTE, True)
    return cls


def mark_spiking(module: nn.Module, spiking: bool = True) -> nn.Module:
    """Declare one module instance spiking (or, with ``spiking=False``, not), e.g. a third-party neuron whose class
    you would rather not change; returns the module."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"mark_spiking takes an nn.Module, got {type(module).__name__}")
    setattr(module, SPIKING_ATTRIBUTE, bool(spiking))
    return module


def is_spiking(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron.

    In order: a declaration (``sparsesnn_spiking`` on the instance or its class: :func:`spiking_neuron`,
    :func:`mark_spiking`); our :class:`LIF` family; a peer library's neuron (SpikingJelly, snnTorch, Norse), matched by
    base-class name so that none of them has to be installed.
    """
    declared = getattr(module, SPIKING_ATTRIBUTE, None)
    if declared is not None:
        return bool(declared)
    return any(
        cls.__name__ in FOREIGN_NEURON_BASES and not cls.__module__.startswith("sparsesnn")
        for cls in type(module).__mro__
    )
