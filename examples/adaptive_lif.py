"""An adaptive LIF neuron as a sparsesnn plugin: one file, one registration (docs/architecture.md, "Neurons as
plugins").

The membrane is the library's LIF (decay ``1/tau`` towards 0, input scaled by ``1/tau``, hard reset to ``v_reset``);
the threshold adapts (Bellec et al., NeurIPS 2018, eq. 2): after each spike it rises by ``beta`` and relaxes back
with the factor ``rho`` per step,

    a[t] = rho * a[t-1] + (1 - rho) * s[t-1],        theta[t] = v_threshold + beta * a[t],
    h[t] = v[t-1] + (x[t] - v[t-1]) / tau,           s[t] = H(h[t] - theta[t]),
    v[t] = h[t] * (1 - s[t]) + v_reset * s[t].

Import this file (``import adaptive_lif``) before building a model, then choose it in a config::

    [neuron]
    kind = "alif"
    tau = 2.0
    params = { rho = 0.9, beta = 0.5 }
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from sparsesnn.neuron.functional import heaviside
from sparsesnn.neuron.kinds import NeuronSettings, NeuronSpec, register_neuron
from sparsesnn.neuron.surrogates import ATan, Surrogate


class ALIFSettings(NeuronSettings):
    """The adaptive threshold's settings (``[neuron.params]``)."""

    rho: float = Field(0.9, ge=0.0, lt=1.0, description="per-step decay of the threshold's adaptation")
    beta: float = Field(0.5, ge=0.0, description="threshold increase per unit of adaptation")


@register_neuron("alif", ALIFSettings)
class AdaptiveLIF(nn.Module):
    """Time-major ``[T, B, ...]`` in, spikes of the same shape out; state is reset at every call."""

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float = 0.0,
        rho: float = 0.9,
        beta: float = 0.5,
        surrogate: Surrogate | None = None,
    ) -> None:
        super().__init__()
        self.tau, self.v_threshold, self.v_reset = tau, v_threshold, v_reset
        self.rho, self.beta = rho, beta
        self.surrogate = surrogate if surrogate is not None else ATan()

    @classmethod
    def from_spec(cls, spec: NeuronSpec, settings: ALIFSettings) -> AdaptiveLIF:
        v_reset = 0.0 if spec.v_reset is None else spec.v_reset
        return cls(spec.tau, spec.v_threshold, v_reset, settings.rho, settings.beta, spec.surrogate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.full_like(x[0], self.v_reset)
        a = torch.zeros_like(x[0])
        s = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            a = self.rho * a + (1.0 - self.rho) * s
            h = v + (x[t] - v) / self.tau
            s = heaviside(h - (self.v_threshold + self.beta * a), self.surrogate)
            v = h * (1.0 - s) + self.v_reset * s
            out.append(s)
        return torch.stack(out)
