"""Spiking neurons on time-major input: the LIF family (:mod:`.lif`), its functional form (:mod:`.functional`),
its settings as one object (:class:`LIFParameters`), the kernels behind it (:mod:`.kernels`), surrogate gradients
(:mod:`.surrogates`), the spiking declarations (:mod:`.spiking`), the registry of neuron kinds (:mod:`.kinds`) and the
time-folding layers and encoders (:mod:`.layers`).
"""

from sparsesnn.neuron.functional import heaviside, lif_multistep, lif_reference, lif_run
from sparsesnn.neuron.kernels.params import LIFParameters
from sparsesnn.neuron.kinds import NEURONS, NeuronSettings, NeuronSpec, register_neuron
from sparsesnn.neuron.lif import LIF, PLIF
from sparsesnn.neuron.spiking import is_spiking, mark_spiking, spiking_neuron

__all__ = [
    "LIF",
    "NEURONS",
    "PLIF",
    "LIFParameters",
    "NeuronSettings",
    "NeuronSpec",
    "heaviside",
    "is_spiking",
    "lif_multistep",
    "lif_reference",
    "lif_run",
    "mark_spiking",
    "register_neuron",
    "spiking_neuron",
]
