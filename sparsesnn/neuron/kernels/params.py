"""The LIF's settings as one frozen object, :class:`LIFParameters`, passed whole from the module to the kernels.

Only two boundaries take it apart: the ``torch.library`` schema of the operators (:meth:`LIFParameters.flat` and
:meth:`LIFParameters.from_flat`, the surrogate as a small integer code and its one parameter) and the launch of a
Triton kernel. ``1/tau`` is not part of it: it is an input of the operators (a float, or a 0-d tensor that may
require grad, as in PLIF), called ``inv_tau`` everywhere.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from sparsesnn.neuron.surrogates import ATan, Rectangular, Sigmoid, SuperSpike, Surrogate, Triangle

#: surrogate class -> (code in the kernels, name of its one parameter)
SURROGATE_CODES: dict[type, tuple[int, str]] = {
    ATan: (0, "alpha"),
    Sigmoid: (1, "alpha"),
    Rectangular: (2, "width"),
    SuperSpike: (3, "beta"),
    Triangle: (4, "gamma"),
}
_BY_CODE: dict[int, tuple[type, str]] = {code: (cls, param) for cls, (code, param) in SURROGATE_CODES.items()}


def surrogate_code(surrogate: Surrogate) -> tuple[int, float] | None:
    """``(code, parameter)`` of one of the library's surrogates; None for any other object."""
    entry = SURROGATE_CODES.get(type(surrogate))
    if entry is None:
        return None
    code, param = entry
    return code, float(getattr(surrogate, param))


@functools.lru_cache(maxsize=64)
def surrogate_from_code(code: int, param: float) -> Surrogate:
    """The surrogate object of ``(code, param)``; the same object for the same pair, so that the CPU kernels compiled
    with ``torch.compile`` (which guard on it) are reused."""
    cls, name = _BY_CODE[code]
    return cls(**{name: param})  # type: ignore[no-any-return]


class LIFParameters(NamedTuple):
    """How a LIF neuron charges, fires and resets (the equations are in :mod:`sparsesnn.neuron.functional`).

    Attributes:
        v_threshold: the firing threshold.
        v_reset: the resting potential: the membrane starts there and leaks towards it, and a hard reset puts it
            back there.
        hard_reset: reset to ``v_reset`` after a spike; False subtracts ``v_threshold`` instead (soft reset).
        decay_input: scale the input by ``1/tau`` as well as the leak.
        detach_reset: cut the reset out of the gradient.
        surrogate: the derivative that stands in for the spike's in the backward pass.
    """

    v_threshold: float = 1.0
    v_reset: float = 0.0
    hard_reset: bool = True
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: Surrogate = ATan()

    def flat(self) -> tuple[float, float, bool, bool, bool, int, float]:
        """The fields in the order of :data:`FLAT_FIELDS`, the surrogate as ``(code, parameter)``; only for one of
        the library's surrogates (:data:`SURROGATE_CODES`)."""
        code = surrogate_code(self.surrogate)
        if code is None:
            raise TypeError(f"the LIF operators take only the library's surrogates, got {self.surrogate!r}")
        return (self.v_threshold, self.v_reset, self.hard_reset, self.decay_input, self.detach_reset, *code)

    @classmethod
    def from_flat(cls, *flat: float | bool | int) -> LIFParameters:
        """The inverse of :meth:`flat`."""
        *settings, code, param = flat
        return cls(*settings, surrogate_from_code(int(code), float(param)))  # type: ignore[arg-type]


#: the names and types of :meth:`LIFParameters.flat`, in order: the parameters of the operators' schema
FLAT_FIELDS: tuple[tuple[str, type], ...] = (
    ("v_threshold", float),
    ("v_reset", float),
    ("hard_reset", bool),
    ("decay_input", bool),
    ("detach_reset", bool),
    ("surrogate", int),
    ("surrogate_param", float),
)
