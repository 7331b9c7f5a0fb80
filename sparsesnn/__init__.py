"""sparsesnn: brain-inspired sparse structure learning for spiking neural networks.

Time-major SNN building blocks (:mod:`sparsesnn.neuron`, :mod:`sparsesnn.neuron.layers`), the papers' models
(:mod:`sparsesnn.models`), datasets read from their original files (:mod:`sparsesnn.data`), the structure learners
(:mod:`sparsesnn.sparse`) and a training engine with exact resume (:mod:`sparsesnn.train.trainer`).
"""

from sparsesnn.neuron.functional import lif_multistep
from sparsesnn.neuron.layers import DirectEncoder, PoissonEncoder, SeqFolded, TimeFolded
from sparsesnn.neuron.lif import LIF, PLIF
from sparsesnn.neuron.spiking import is_spiking, mark_spiking, spiking_neuron
from sparsesnn.neuron.surrogates import ATan, Rectangular, Sigmoid, SuperSpike, Triangle

__version__ = "0.1.0"

__all__ = [
    "LIF",
    "PLIF",
    "ATan",
    "DirectEncoder",
    "PoissonEncoder",
    "Rectangular",
    "SeqFolded",
    "Sigmoid",
    "SuperSpike",
    "TimeFolded",
    "Triangle",
    "__version__",
    "is_spiking",
    "lif_multistep",
    "mark_spiking",
    "spiking_neuron",
]
