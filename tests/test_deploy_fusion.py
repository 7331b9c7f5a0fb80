"""deploy's fused (spiking block, 2x2 max pool) loops: the same outputs bit for bit as the unfused pair, every name and
parameter where it was, hooks still firing, and streams, copies and pickles unaffected."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from sparsesnn.deploy import deploy
from sparsesnn.deploy.block_fusion import FusedSequential, fuse_spiking_blocks, unfuse
from sparsesnn.deploy.event_layers import EventConv2d, numba_available
from sparsesnn.deploy.stream import stream
from sparsesnn.models import build_model
from sparsesnn.neuron.kinds import NeuronSpec
from sparsesnn.neuron.layers import DirectEncoder, SeqFolded
from tests.test_deploy import sparse_convnet, spikes

pytestmark = pytest.mark.skipif(not numba_available(), reason="the fused loop is compiled (numba)")


def unfused(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    unfuse(clone)
    return clone


def inputs() -> list[torch.Tensor]:
    """A step-invariant input (one image repeated, what the convnet's encoder gives) and one that varies over time."""
    g = torch.Generator().manual_seed(3)
    return [DirectEncoder(4)(torch.rand(3, 1, 8, 8, generator=g)), torch.rand(4, 2, 1, 8, 8, generator=g)]


@pytest.mark.parametrize("event", [True, False])
def test_fused_blocks_equal_the_unfused_pairs_bit_for_bit(event) -> None:  # type: ignore[no-untyped-def]
    """``event``: every conv event-driven (its channels-last charge read by the fused loop); else every layer dense
    (the torch conv's NCHW output, step-invariant for the first block)."""
    model = sparse_convnet()
    example = inputs()[0]
    deployed, report = deploy(model, example, force=event, choices=None if event else {}, repeats=1)
    assert report.fused == ["features.0+features.1", "features.2+features.3"]
    assert type(deployed.features) is FusedSequential
    assert any(isinstance(m, EventConv2d) for m in deployed.modules()) == event
    reference = unfused(deployed)
    assert type(reference.features) is nn.Sequential
    for x in inputs():
        got = deployed(x)
        assert torch.equal(got, reference(x))
        torch.testing.assert_close(got, model(x), atol=1e-4, rtol=1e-4)
    assert list(deployed.state_dict()) == list(reference.state_dict())
    assert [n for n, _ in deployed.named_modules()] == [n for n, _ in reference.named_modules()]


@pytest.mark.parametrize("soft_reset", [False, True])
def test_the_fused_loop_keeps_the_neurons_arithmetic(soft_reset) -> None:  # type: ignore[no-untyped-def]
    """Soft reset and an odd map (9x9: the last row and column are in no window) on the torch conv's output."""
    torch.manual_seed(5)
    spec = NeuronSpec(backend="eager", v_reset=None) if soft_reset else NeuronSpec(backend="eager")
    model = build_model("convnet", in_channels=2, num_classes=4, input_size=9, channels=(4, 8), neuron=spec).eval()
    x = spikes((6, 2, 2, 9, 9), 0.4, 1) * 3
    deployed, report = deploy(model, x, choices={}, repeats=1)
    assert report.fused
    assert torch.equal(deployed(x), unfused(deployed)(x))


def test_a_hooked_or_replaced_child_runs_unfused() -> None:
    deployed, _ = deploy(sparse_convnet(), inputs()[0], force=True, repeats=1)
    x = inputs()[1]
    expected = unfused(deployed)(x)
    seen: list[tuple[int, ...]] = []
    handle = deployed.features[1].register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    assert torch.equal(deployed(x), expected)
    assert seen == [(4, 2, 8, 4, 4)]  # the pool ran, as itself
    handle.remove()
    calls: list[int] = []
    torch_pool = SeqFolded(nn.MaxPool2d(2, 2))  # a pair that no longer matches: the container runs its children
    torch_pool.register_forward_hook(lambda *_: calls.append(1))
    deployed.features[3] = torch_pool
    assert torch.equal(deployed(x), expected) and calls == [1]


def test_a_fused_model_copies_pickles_and_streams() -> None:
    deployed, _ = deploy(sparse_convnet(), inputs()[0], force=True, repeats=1)
    x = inputs()[1]
    expected = deployed(x)
    for clone in (copy.deepcopy(deployed), pickle.loads(pickle.dumps(deployed))):
        assert type(clone.features) is FusedSequential
        assert torch.equal(clone(x), expected)
    s = stream(deployed)  # the stream's copy is unfused: its neurons carry their membrane between calls
    assert not any(type(m) is FusedSequential for m in s.model.modules())
    steps = torch.stack([s.step(x[t]) for t in range(x.shape[0])])
    torch.testing.assert_close(steps, expected, atol=1e-4, rtol=1e-4)
    assert type(deployed.features) is FusedSequential  # the model given to the stream is left as it was


def test_fusion_takes_only_plain_sequentials_and_is_idempotent() -> None:
    deployed, report = deploy(sparse_convnet(), inputs()[0], force=True, repeats=1)
    assert fuse_spiking_blocks(deployed) == report.fused  # again: the same runs, nothing doubled
    assert deployed.features.fused_starts == (0, 2)
    unfuse(deployed)
    assert type(deployed.features) is nn.Sequential and "fused_starts" not in deployed.features.__dict__
    assert fuse_spiking_blocks(nn.Sequential(nn.Linear(2, 2))) == []


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    t, b = x.shape[:2]
    return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(t, b, *x.shape[2:])


@pytest.mark.parametrize("stateless", ["identity", "event conv"])
@pytest.mark.parametrize("layout", ["nchw", "channels last", "step invariant"])
@pytest.mark.parametrize("soft_reset", [False, True])
@pytest.mark.parametrize("size", [(7, 9), (7, 8), (6, 8)])
@pytest.mark.parametrize("channels", [6, 16])
def test_run_pair_equals_the_neuron_then_the_pool(stateless, layout, soft_reset, size, channels) -> None:  # type: ignore[no-untyped-def]
    """The fused loop against the pair it replaces, on dense random charge (every window's four neurons matter), in
    each memory order the loop reads. NCHW: an odd width (the last column in no window) pools window by window, an
    even one by pairs of neighbours (an odd height's last row in no window); channels-last (an event conv's charge, or
    channels-last input): 16 channels pool 8 at a time, 6 one by one."""
    from sparsesnn.deploy.block_fusion import run_pair
    from sparsesnn.deploy.lif import InferenceLIF
    from sparsesnn.deploy.pool import InferenceMaxPool2d
    from sparsesnn.neuron.lif import LIF

    torch.manual_seed(2)
    if stateless == "identity":
        first: nn.Module = SeqFolded(nn.Identity())
    else:
        conv = nn.Conv2d(5, channels, 3, padding=1)
        with torch.no_grad():
            conv.weight.mul_(6.0)  # fire at a useful rate
        first = SeqFolded(EventConv2d(conv, "numba"))
    block = nn.Sequential(first, InferenceLIF(LIF(tau=2.0, v_reset=None if soft_reset else 0.0)))
    pool = SeqFolded(InferenceMaxPool2d(nn.MaxPool2d(2)))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, 5 if stateless == "event conv" else channels, *size, generator=g) * 1.5
    if layout == "channels last":
        x = _channels_last(x)
    elif layout == "step invariant":
        x = x[:1].expand(4, *x.shape[1:])
    got = run_pair(block, pool, x)
    expected = pool(block(x))
    assert got is not None and torch.equal(got, expected)
    assert 0.1 < float(expected.mean()) < 0.9


def _lone_block(stateless: str, soft_reset: bool) -> tuple[nn.Module, torch.Tensor]:
    """A spiking block with the given stateless part and an input for it, weights scaled to fire at a useful rate."""
    from sparsesnn.deploy.event_layers import EventLinear
    from sparsesnn.deploy.lif import InferenceLIF
    from sparsesnn.deploy.passes import FoldedNorm, StepInvariant
    from sparsesnn.neuron.lif import LIF

    torch.manual_seed(6)
    g = torch.Generator().manual_seed(7)
    if stateless.startswith("event linear"):
        linear = nn.Linear(20, 13)  # 13 outputs: the blocks layout pads its rows to 16
        with torch.no_grad():
            linear.weight.mul_(4.0)
            linear.weight[linear.weight.abs() < 0.5] = 0.0
        first: nn.Module = SeqFolded(EventLinear(linear, "numba", stateless.split()[-1]))
        x = spikes((4, 3, 20), 0.4, 8)
    else:
        conv = nn.Conv2d(3, 5, 3, padding=1)
        with torch.no_grad():
            conv.weight.mul_(5.0)
        layer = EventConv2d(conv, "numba") if stateless == "event conv" else conv
        first = SeqFolded(layer, FoldedNorm("BatchNorm2d", 4))
        x = torch.randn(4, 2, 3, 6, 8, generator=g)
        if stateless == "step-invariant torch conv":
            first, x = StepInvariant(first), x[:1].expand(4, *x.shape[1:])
    neuron = InferenceLIF(LIF(tau=2.0, v_reset=None if soft_reset else 0.0))
    return nn.Sequential(first, neuron), x


@pytest.mark.parametrize(
    "stateless",
    [
        "event linear columns",
        "event linear blocks",
        "event linear csc",
        "event conv",
        "torch conv",
        "step-invariant torch conv",
    ],
)
@pytest.mark.parametrize("soft_reset", [False, True])
def test_run_block_equals_the_block(stateless, soft_reset) -> None:  # type: ignore[no-untyped-def]
    """A spiking block alone: its direct layer's output straight into the neurons' loop gives the block's spikes bit for
    bit, in the block's memory order (an event conv's stay channels-last)."""
    from sparsesnn.deploy.block_fusion import run_block

    block, x = _lone_block(stateless, soft_reset)
    expected = block(x)
    got = run_block(block, x)
    assert got is not None and torch.equal(got, expected)
    assert got[0].is_contiguous(memory_format=torch.channels_last) == (stateless == "event conv")
    assert 0.05 < float(expected.mean()) < 0.95


def test_run_block_leaves_what_it_cannot_run_to_the_block() -> None:
    """No direct layer, a hooked child, input the direct path does not take (the modules then raise as they do), or a
    step-invariant layer on input that is not one step expanded: None, and the container runs the block itself."""
    from sparsesnn.deploy.block_fusion import run_block

    block, x = _lone_block("torch conv", False)
    assert run_block(nn.Sequential(SeqFolded(nn.Identity()), block[1]), x) is None
    assert run_block(block, x[0]) is None  # 4-D: SeqFolded's own error is the block's to raise
    handle = block[0][0].register_forward_hook(lambda *_: None)
    assert run_block(block, x) is None
    handle.remove()
    invariant, y = _lone_block("step-invariant torch conv", False)
    assert run_block(invariant, y.contiguous()) is None  # equal steps, but not expanded: StepInvariant compares them
    container = nn.Sequential(block, SeqFolded(nn.Flatten()))
    assert fuse_spiking_blocks(container) == ["0"]
    assert type(container) is FusedSequential and container.block_starts == (0,)
    torch.testing.assert_close(container(x), unfused(container)(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "stateless", ["torch linear", "event linear columns", "event linear blocks", "event linear csc", "event conv"]
)
def test_run_layer_equals_the_layer_alone(stateless) -> None:  # type: ignore[no-untyped-def]
    """A stateless layer alone (the readout): the linear on the unfolded input, or the event layer's kernel wrapped,
    gives the module's output bit for bit (an event conv's channels-last in memory, as the module's)."""
    from sparsesnn.deploy.block_fusion import run_layer

    block, x = _lone_block(stateless.replace("torch linear", "event linear columns"), False)
    layer = SeqFolded(nn.Linear(20, 13)) if stateless == "torch linear" else block[0]
    expected = layer(x)
    got = run_layer(layer, x)
    assert got is not None and torch.equal(got, expected)
    if stateless == "event conv":
        assert got[0].is_contiguous(memory_format=torch.channels_last)  # as the module's: the next layer reads it
    else:
        assert got.is_contiguous()
    assert run_layer(layer, x[0]) is None  # 2-D or 4-D: SeqFolded's own error is the layer's to raise
    handle = layer[0].register_forward_hook(lambda *_: None)
    assert run_layer(layer, x) is None
    handle.remove()
    if stateless == "torch linear":  # strided input: torch's linear need not fold it into the same product
        assert run_layer(layer, x.transpose(0, 1).contiguous().transpose(0, 1)) is None


def test_a_layer_alone_rides_along_in_a_fused_container(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside a spiking block, a stateless layer alone runs through :func:`run_layer` (and the block through
    :func:`run_block`, each given its own child) and is named in the runs; in a container with nothing else to fuse
    it leaves the container plain."""
    from sparsesnn.deploy import block_fusion

    block, x = _lone_block("event linear blocks", False)
    readout = SeqFolded(nn.Linear(13, 4))
    container = nn.Sequential(block, readout)
    expected = container(x)
    assert fuse_spiking_blocks(container) == ["0", "1"]
    assert type(container) is FusedSequential and container.layer_starts == (1,)
    ran: list[tuple[str, bool]] = []
    for name in ("run_block", "run_layer"):
        original = getattr(block_fusion, name)

        def recorded(child, y, name=name, original=original):  # type: ignore[no-untyped-def]
            out = original(child, y)
            ran.append((name, out is not None))
            return out

        monkeypatch.setattr(block_fusion, name, recorded)
    assert torch.equal(container(x), expected)
    assert ran == [("run_block", True), ("run_layer", True)]  # both fused paths taken, not the modules
    alone = nn.Sequential(SeqFolded(nn.Linear(13, 4)))
    assert fuse_spiking_blocks(alone) == [] and type(alone) is nn.Sequential
    unfuse(container)
    assert "layer_starts" not in container.__dict__


def test_fusing_again_after_a_child_was_replaced_finds_the_runs_afresh() -> None:
    block, _x = _lone_block("torch conv", False)
    container = nn.Sequential(block, SeqFolded(nn.Flatten()))
    assert fuse_spiking_blocks(container) == ["0"]
    container[0] = nn.Sequential(block[0], nn.ReLU())  # no spiking block left
    assert fuse_spiking_blocks(container) == []
    assert type(container) is nn.Sequential and "block_starts" not in container.__dict__
    container[0] = block
    assert fuse_spiking_blocks(container) == ["0"] and container.block_starts == (0,)


def test_global_forward_hooks_fire_on_every_child() -> None:
    """A hook registered for every module (``register_module_forward_hook``) sees each child run: the fused container
    runs its children as themselves while one is registered."""
    from torch.nn.modules.module import register_module_forward_hook

    from sparsesnn.deploy.lif import InferenceLIF

    deployed, _ = deploy(sparse_convnet(), inputs()[0], force=True, repeats=1)
    x = inputs()[1]
    expected = deployed(x)
    seen: list[str] = []
    handle = register_module_forward_hook(lambda m, _i, _o: seen.append(type(m).__name__))
    try:
        got = deployed(x)
    finally:
        handle.remove()
    assert torch.equal(got, expected)
    lifs = sum(isinstance(m, InferenceLIF) for m in deployed.modules())
    assert seen.count("InferenceLIF") == lifs and "InferenceMaxPool2d" in seen
