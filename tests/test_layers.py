"""Time folding and input encoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsesnn.neuron.layers import DirectEncoder, PoissonEncoder, SeqFolded, TimeFolded, make_encoder


def test_time_folded_equals_per_step_application():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 5, 2, 6, 6)
    folded = TimeFolded(conv)(x)
    per_step = torch.stack([conv(x[t]) for t in range(4)])
    torch.testing.assert_close(folded, per_step)
    assert folded.shape == (4, 5, 3, 6, 6)


def test_seq_folded_folds_once_and_keeps_names():
    seq = SeqFolded(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert "0.weight" in seq.state_dict() and "1.running_mean" in seq.state_dict()
    x = torch.randn(3, 2, 1, 5, 5)
    out = seq(x)
    assert out.shape == (3, 2, 2, 3, 3)
    seq.eval()  # with running statistics BN is per-sample, so folding equals stepping
    torch.testing.assert_close(seq(x), torch.stack([seq[1](seq[0](x[t])) for t in range(3)]))
    with pytest.raises(ValueError, match=r"\[T, B"):
        seq(torch.zeros(2, 5))


def test_batchnorm_statistics_span_time_and_batch():
    bn = nn.BatchNorm1d(1, affine=False)
    x = torch.arange(6.0).reshape(3, 2, 1)  # T=3, B=2
    out = TimeFolded(bn)(x)
    assert out.mean().abs() < 1e-6  # normalised over all T*B values together


def test_direct_encoder_repeats():
    x = torch.randn(2, 1, 4, 4)
    out = DirectEncoder(5)(x)
    assert out.shape == (5, 2, 1, 4, 4) and all(torch.equal(out[t], x) for t in range(5))


def test_poisson_encoder_rates_and_seeding():
    x = torch.tensor([[0.0, 0.25, 1.0, 2.0, -1.0]])
    enc = PoissonEncoder(4000, generator=torch.Generator().manual_seed(0))
    rates = enc(x).mean(0)[0]
    assert rates[0] == 0 and rates[2] == 1 and rates[3] == 1 and rates[4] == 0  # clipped to [0, 1]
    assert abs(float(rates[1]) - 0.25) < 0.03
    a = PoissonEncoder(8, torch.Generator().manual_seed(1))(x)
    b = PoissonEncoder(8, torch.Generator().manual_seed(1))(x)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_encoders_validate_steps(bad):
    with pytest.raises(ValueError, match="time_steps"):
        DirectEncoder(bad)


def test_make_encoder():
    assert isinstance(make_encoder("poisson", 3), PoissonEncoder)
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("latency", 3)
