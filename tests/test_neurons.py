"""The fused LIF/PLIF op against a reference that lets autograd run through the Python time loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsesnn.neuron.functional import lif_multistep, lif_reference
from sparsesnn.neuron.kernels.params import LIFParameters
from sparsesnn.neuron.lif import LIF, PLIF
from sparsesnn.neuron.surrogates import ATan, Rectangular, Sigmoid, SuperSpike, Triangle, make_surrogate

SURROGATES = [ATan(2.0), Sigmoid(4.0), Rectangular(1.0), SuperSpike(10.0), Triangle(1.0)]


def _compare(x, k, backend, **kw):
    """Spikes and gradients (w.r.t. x and 1/tau) of the fused op and of the reference, on the same upstream grad."""
    x1 = x.clone().requires_grad_()
    k1 = k.clone().requires_grad_()
    out = lif_multistep(x1, k1, backend=backend, **kw)
    g = torch.randn_like(out)
    gx, gk = torch.autograd.grad(out, (x1, k1), g)
    x2 = x.clone().requires_grad_()
    k2 = k.clone().requires_grad_()
    ref = lif_reference(x2, k2, LIFParameters(**kw))  # the keywords of lif_multistep are its fields
    rx, rk = torch.autograd.grad(ref, (x2, k2), g)
    return out, ref, gx, rx, gk, rk


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    tau=st.floats(1.05, 10.0),
    v_threshold=st.floats(0.2, 2.0),
    reset_offset=st.floats(0.05, 1.0),
    hard=st.booleans(),
    decay_input=st.booleans(),
    detach_reset=st.booleans(),
    surrogate=st.sampled_from(SURROGATES),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_eager_matches_reference(
    shape, tau, v_threshold, reset_offset, hard, decay_input, detach_reset, surrogate, seed
):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 * v_threshold
    k = torch.tensor(1.0 / tau, dtype=torch.float64)
    kw = dict(
        v_threshold=v_threshold,
        v_reset=v_threshold - reset_offset if hard else 0.0,
        hard_reset=hard,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
    )
    out, ref, gx, rx, gk, rk = _compare(x, k, "eager", **kw)
    assert torch.equal(out, ref)
    torch.testing.assert_close(gx, rx, atol=1e-6, rtol=0)
    torch.testing.assert_close(gk, rk, atol=1e-6, rtol=1e-9)


@pytest.mark.parametrize(
    "hard,decay_input,detach_reset,surrogate",
    [(True, True, False, ATan(2.0)), (False, False, True, Sigmoid(4.0))],
)
def test_fused_compiled_matches_reference(hard, decay_input, detach_reset, surrogate):
    kw = dict(
        v_threshold=1.0,
        v_reset=0.0,
        hard_reset=hard,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
    )
    for shape in [(4, 3, 5), (4, 2, 7, 3)]:  # the second shape exercises a new neuron count on the same kernel
        x = torch.randn(shape, dtype=torch.float64) * 2
        k = torch.tensor(0.6, dtype=torch.float64)
        out, ref, gx, rx, gk, rk = _compare(x, k, "compiled", **kw)
        assert torch.equal(out, ref)
        torch.testing.assert_close(gx, rx, atol=1e-6, rtol=0)
        torch.testing.assert_close(gk, rk, atol=1e-6, rtol=1e-9)


def test_float32_compiled_spikes_equal_eager():
    x = torch.randn(4, 8, 16) * 2
    a = lif_multistep(x, 0.5, backend="compiled")
    b = lif_multistep(x, 0.5, backend="eager")
    assert torch.equal(a, b)


def test_compiled_kernel_follows_v_reset_changes():
    """Two models with different v_reset in one process (a sweep, a benchmark, this suite): the compiled kernel must
    not reuse the code of one value for the other."""
    from sparsesnn.neuron.kernels.loops import lif_forward_loop
    from sparsesnn.neuron.kernels.op import compiled_kernels

    forward, _ = compiled_kernels()
    k = torch.tensor(0.5)
    for n, v_reset in [(64, 0.0), (32, 0.0), (64, -0.25), (64, 0.0), (32, -0.25)]:
        x = torch.randn(4, n, generator=torch.Generator().manual_seed(n)) * 2
        params = LIFParameters(v_reset=v_reset)
        got = forward(x, k, params)[0]
        assert torch.equal(got, lif_forward_loop(x, k, params)[0]), (n, v_reset)


def test_lif_known_sequence():
    # constant input 1.5, tau 2: H = 0.75 (no spike), 1.125 (spike, reset to 0), 0.75 ...
    out = LIF(tau=2.0, backend="eager")(torch.full((4, 1), 1.5))
    assert out.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_soft_reset_subtracts_threshold():
    # no input decay: H0 = 0 + 1.8 = 1.8 -> spike, V = 0.8; H1 = 0.8 - 0.8/2 + 0 = 0.4 -> no spike
    x = torch.tensor([[1.8], [0.0]])
    neuron = LIF(tau=2.0, v_reset=None, decay_input=False, backend="eager")
    assert neuron(x).flatten().tolist() == [1.0, 0.0]


def test_no_state_between_calls():
    neuron = LIF(backend="eager")
    x = torch.rand(6, 3, 4) * 3
    assert torch.equal(neuron(x), neuron(x))


def test_plif_learns_tau():
    neuron = PLIF(init_tau=2.0, backend="eager")
    assert float(neuron.inv_tau().detach()) == pytest.approx(0.5)
    x = torch.rand(8, 4, 10) * 3
    neuron(x).sum().backward()
    assert neuron.w.grad is not None and torch.isfinite(neuron.w.grad)


def test_plif_grad_matches_reference():
    x = torch.randn(5, 3, 4, dtype=torch.float64) * 2
    neuron = PLIF(init_tau=3.0, backend="eager").double()
    neuron(x).sum().backward()
    w = neuron.w.detach().clone().requires_grad_()
    lif_reference(x, torch.sigmoid(w)).sum().backward()
    torch.testing.assert_close(neuron.w.grad, w.grad, atol=1e-9, rtol=1e-9)


def _saved_bytes(fn, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return total


def test_fused_saves_less_than_reference():
    x = torch.randn(4, 8, 32, requires_grad=True)
    fused = _saved_bytes(lambda v: lif_multistep(v, 0.5, backend="eager"), x)
    ref = _saved_bytes(lambda v: lif_reference(v, 0.5), x)
    assert fused <= x.numel() * 4 + 64  # H only (plus the scalar 1/tau)
    assert fused * 2.5 < ref  # the reference keeps about 3 tensors of the input size


@pytest.mark.parametrize("bad", [dict(tau=1.0), dict(tau=float("nan")), dict(v_reset=1.0), dict(backend="gpu")])
def test_bad_neuron_args(bad):
    with pytest.raises(ValueError):
        LIF(**bad)


def test_rejects_non_time_major():
    with pytest.raises(ValueError, match="time-major"):
        lif_multistep(torch.zeros(5), 0.5)


def test_surrogates_registry_and_validation():
    assert make_surrogate("atan", alpha=3.0) == ATan(3.0) == make_surrogate("atan", 3.0)
    assert make_surrogate("rectangular", 0.5) == Rectangular(width=0.5)  # the one shape parameter, unnamed
    with pytest.raises(ValueError, match="unknown surrogate"):
        make_surrogate("relu")
    with pytest.raises(ValueError):
        ATan(alpha=-1.0)
    for sg in SURROGATES:  # each surrogate peaks at the threshold and is symmetric
        g = sg.grad(torch.tensor([-0.3, 0.0, 0.3]))
        assert g[1] >= g[0] and g[0] == pytest.approx(float(g[2]))


def test_operators_pass_opcheck_and_match_the_eager_path():
    """``torch.ops.sparsesnn.lif_forward`` / ``lif_backward`` (what a compiled model calls): schema, fake
    implementation, autograd registration and AOT dispatch (``torch.library.opcheck``), and the same spikes and
    gradients as the eager ``autograd.Function`` path that ``lif_multistep`` takes outside a compiler."""
    x = torch.randn(3, 4, 5) * 2
    k = torch.tensor(0.4, requires_grad=True)
    flat = LIFParameters().flat()  # v_threshold 1, v_reset 0, hard reset, decay_input, ATan(2)
    args = (x.clone().requires_grad_(), k, 0.0, False, *flat)
    torch.library.opcheck(torch.ops.sparsesnn.lif_forward.default, args)
    spikes, charge = torch.ops.sparsesnn.lif_forward(*args)
    g = torch.randn_like(spikes)
    backward_args = (g, charge.detach(), k.detach(), 0.0, False, True, *flat)
    torch.library.opcheck(torch.ops.sparsesnn.lif_backward.default, backward_args)
    gx_op, gk_op = torch.autograd.grad(spikes, (args[0], k), g)
    x2 = x.clone().requires_grad_()
    k2 = torch.tensor(0.4, requires_grad=True)
    eager = lif_multistep(x2, k2, backend="eager")
    gx, gk = torch.autograd.grad(eager, (x2, k2), g)
    assert torch.equal(spikes, eager)
    assert torch.equal(gx_op, gx) and torch.equal(gk_op, gk)


@dataclasses.dataclass(frozen=True)
class _HalfATan:
    """A surrogate of the user's own (not one the operators know): half of ATan(2)'s derivative."""

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ATan(2.0).grad(x)


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_a_users_own_surrogate_matches_the_reference(backend):
    x = torch.randn(4, 3, 6, dtype=torch.float64) * 2
    k = torch.tensor(0.5, dtype=torch.float64)
    out, ref, gx, rx, gk, rk = _compare(x, k, backend, surrogate=_HalfATan())
    assert torch.equal(out, ref)
    torch.testing.assert_close(gx, rx, atol=1e-6, rtol=0)
    torch.testing.assert_close(gk, rk, atol=1e-6, rtol=1e-9)


def test_lif_parameters_travel_whole_and_flatten_only_for_the_schema():
    """The module hands its settings to the kernels as one LIFParameters (a soft reset leaks towards 0); the operators'
    schema takes them flat and gets back the same object."""
    from sparsesnn.neuron.functional import lif_run
    from sparsesnn.neuron.kernels.params import FLAT_FIELDS, LIFParameters

    neuron = LIF(tau=3.0, v_threshold=0.7, v_reset=None, decay_input=False, surrogate=Sigmoid(4.0), backend="eager")
    params = neuron.lif_parameters()
    assert params == LIFParameters(0.7, 0.0, False, False, False, Sigmoid(4.0))
    assert LIFParameters.from_flat(*params.flat()) == params and len(params.flat()) == len(FLAT_FIELDS)
    schema = str(torch.ops.sparsesnn.lif_forward.default._schema)
    assert all(f" {name}" in schema for name, _ in FLAT_FIELDS)
    x = torch.randn(5, 3, 4) * 2
    expected = lif_multistep(x, 1 / 3.0, v_threshold=0.7, v_reset=0.0, hard_reset=False, decay_input=False,
                             surrogate=Sigmoid(4.0), backend="eager")  # fmt: skip
    assert torch.equal(neuron(x), expected) and torch.equal(lif_run(x, 1 / 3.0, params, "eager"), expected)
    with pytest.raises(TypeError, match="library's surrogates"):
        params._replace(surrogate=_HalfATan()).flat()
