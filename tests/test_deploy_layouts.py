"""The compiled event kernels' weight layouts (issue 33): every layout equals the dense layer, the cost model picks
the block layout for a block-structured mask and whole rows for a dense one, and a batch split over threads gives the
same output as one thread."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from sparsesnn.deploy.event_layers import EventConv2d, EventLinear, blocks_of, numba_available
from sparsesnn.deploy.threads import SampleThreads
from tests.test_deploy import sparse_, spikes

pytestmark = pytest.mark.skipif(not numba_available(), reason="the layouts are the compiled kernels' (numba)")


def block_structured_(module: nn.Module, density: float, seed: int, block: int = 8) -> nn.Module:
    """Zero whole blocks of ``block`` consecutive output channels per input (and tap), keeping ``density`` of them."""
    g = torch.Generator().manual_seed(seed)
    w = module.weight
    groups = -(-w.shape[0] // block)
    keep = (torch.rand((groups, *w.shape[1:]), generator=g) < density).repeat_interleave(block, 0)[: w.shape[0]]
    with torch.no_grad():
        w.mul_(keep)
    return module


@pytest.mark.parametrize("layout", ["rows", "blocks", "columns", "direct"])
@pytest.mark.parametrize(("out_channels", "padding", "kernel"), [(16, 1, 3), (12, 0, 3), (9, 2, 5), (8, (0, 2), 3)])
def test_every_conv_layout_equals_the_dense_conv(layout, out_channels, padding, kernel) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(out_channels)
    conv = block_structured_(nn.Conv2d(5, out_channels, kernel, padding=padding), 0.4, 1)
    event = EventConv2d(conv, "numba", layout)
    assert event.layout == layout
    for x in (spikes((3, 5, 11, 9), 0.3, 2), spikes((3, 5, 11, 9), 0.3, 3) * torch.randn(3, 5, 11, 9)):
        torch.testing.assert_close(event(x), conv(x).detach(), atol=1e-5, rtol=1e-5)
    channels_last = spikes((3, 5, 11, 9), 0.3, 4).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(event(channels_last), conv(channels_last).detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["csc", "blocks", "columns"])
@pytest.mark.parametrize("out_features", [16, 13, 3])
def test_every_linear_layout_equals_the_dense_linear(layout, out_features) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(out_features)
    linear = block_structured_(nn.Linear(40, out_features), 0.3, 2)
    event = EventLinear(linear, "numba", layout)
    assert event.layout == layout
    for x in (spikes((2, 5, 40), 0.2, 4), spikes((2, 5, 40), 0.2, 5) * torch.randn(2, 5, 40)):
        torch.testing.assert_close(event(x), linear(x).detach(), atol=1e-5, rtol=1e-5)


def test_the_cost_model_takes_blocks_for_a_block_mask_and_rows_for_a_dense_or_scattered_one() -> None:
    torch.manual_seed(0)
    assert EventConv2d(block_structured_(nn.Conv2d(32, 64, 3, padding=1), 0.1, 1)).layout == "blocks"
    assert EventConv2d(nn.Conv2d(32, 64, 3, padding=1)).layout == "rows"
    assert EventConv2d(sparse_(nn.Conv2d(32, 64, 3, padding=1), 0.1, 1)).layout == "rows"  # 57 % of blocks filled
    assert EventConv2d(nn.Conv2d(32, 64, 3, stride=2, padding=1)).layout == "columns"
    assert EventLinear(nn.Linear(64, 64)).layout == "columns"
    assert EventLinear(block_structured_(nn.Linear(64, 64), 0.1, 2)).layout == "blocks"
    assert EventLinear(sparse_(nn.Linear(64, 512), 0.005, 3)).layout == "csc"


@pytest.mark.parametrize(("stride", "dilation", "out_channels"), [(2, 1, 40), (1, 2, 5), (3, 2, 33)])
def test_the_direct_layout_takes_any_stride_and_dilation(stride, dilation, out_channels) -> None:  # type: ignore[no-untyped-def]
    """The direct layout (every output pixel gathering its receptive field in registers, 32 then 8 output channels
    at a time: 40 and 33 channels take both sums, 5 a zero-padded block) equals the conv at any stride and dilation,
    on analog input in either memory order; strided convs offer it beside whole columns."""
    torch.manual_seed(out_channels)
    conv = nn.Conv2d(3, out_channels, 3, stride=stride, padding=(1, 2), dilation=dilation)
    assert "direct" in EventConv2d.layouts_for(conv)
    event = EventConv2d(conv, "numba", "direct")
    x = torch.randn(2, 3, 13, 10)
    torch.testing.assert_close(event(x), conv(x).detach(), atol=1e-5, rtol=1e-5)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(event(nhwc), event(x))  # the same padded copy, the same sums


def test_blocks_of_marks_the_blocks_holding_a_weight() -> None:
    w = torch.zeros(2, 10)
    w[0, 9] = 1.0
    w[1, 0] = 2.0
    assert blocks_of(w).tolist() == [[False, True], [True, False]]


def test_layouts_are_refused_where_they_cannot_run() -> None:
    with pytest.raises(ValueError, match="stride 1 and dilation 1"):
        EventConv2d(nn.Conv2d(3, 8, 3, stride=2), "numba", "blocks")
    with pytest.raises(ValueError, match="needs backend 'numba'"):
        EventLinear(nn.Linear(3, 8), "torch", "blocks")
    with pytest.raises(ValueError, match="layout must be one of"):
        EventConv2d(nn.Conv2d(3, 8, 3), "numba", "csc")  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["rows", "blocks", "columns", "direct"])
def test_a_batch_split_over_threads_equals_one_thread(layout) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    conv = block_structured_(nn.Conv2d(6, 16, 3, padding=1), 0.3, 5)
    event = EventConv2d(conv, "numba", layout)
    x = spikes((30, 6, 12, 12), 0.2, 6)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = event(x).clone()
        torch.set_num_threads(3)
        assert event.threads.threads_for(30) == 3 and event.threads.threads_for(16) == 2
        assert event.threads.threads_for(4) == 1  # batch 1 at T = 4: a pool thread costs more than it saves
        three = event(x).clone()
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, three)  # each slice writes its own samples: the same sums in the same order
    torch.testing.assert_close(three, conv(x).detach(), atol=1e-5, rtol=1e-5)


def test_sample_threads_cover_every_sample_once_and_raise_a_slice_error() -> None:
    seen: list[tuple[int, int]] = []
    threads = SampleThreads()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        threads.run(lambda a, b: seen.append((a, b)), 10)
        assert sorted(seen) == [(0, 3), (3, 7), (7, 10)]
        assert SampleThreads(min_samples=4).threads_for(10) == 2

        def fail(a: int, b: int) -> None:
            if a > 0:
                raise RuntimeError(f"slice {a}")

        with pytest.raises(RuntimeError, match="slice"):
            threads.run(fail, 10)
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(ValueError, match="min_samples"):
        SampleThreads(0)


def test_a_layer_that_ran_on_threads_copies_and_pickles() -> None:
    event = EventConv2d(nn.Conv2d(4, 8, 3, padding=1), "numba")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = spikes((16, 4, 6, 6), 0.3, 1)
        expected = event(x)
        assert event.threads._pool is not None  # the split ran on a pool thread
        for clone in (copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
            torch.testing.assert_close(clone(x), expected)
        linear = EventLinear(nn.Linear(12, 5), "numba")  # its bound kernel call, like the conv's plans, is a closure
        v = spikes((16, 12), 0.3, 2)
        expected = linear(v)
        for clone in (copy.deepcopy(linear), pickle.loads(pickle.dumps(linear))):
            torch.testing.assert_close(clone(v), expected)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_lif_reads_a_step_invariant_input_once_and_equals_the_copied_input(backend, channels_last) -> None:  # type: ignore[no-untyped-def]
    from sparsesnn.deploy.lif import InferenceLIF
    from sparsesnn.neuron.lif import LIF

    lif = InferenceLIF(LIF(tau=2.0), backend)
    step = torch.randn(1, 2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2
    if channels_last:
        step = step.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    x = step.expand(4, *step.shape[1:])  # what StepInvariant returns: one step, stride 0 over time
    got, expected = lif(x), lif(x.contiguous())
    assert torch.equal(got, expected) and got.shape == x.shape
    assert 0 < float(got.mean()) < 1  # some neurons fire, not all


def _memory_orders(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``x`` ``[T, A, B, C]`` in memory orders the deployed LIF meets: contiguous, channels-last style (the last two
    dims swapped in memory), a swap of two dims (its own inverse permutation), and a non-dense strided view."""
    t, a, b, c = x.shape
    padded = torch.zeros(t, a, b, c + 3)
    padded[..., :c] = x
    return {
        "contiguous": x.contiguous(),
        "last_two_swapped": x.transpose(2, 3).contiguous().transpose(2, 3),
        "rotated": x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
        "strided": padded[..., :c],
    }


@pytest.mark.parametrize("hard_reset", [True, False])
def test_inference_lif_equals_the_torch_loop_in_every_memory_order_and_keeps_it(hard_reset) -> None:  # type: ignore[no-untyped-def]
    """The compiled path reads the input as numpy views in its memory order: the spikes equal the plain torch loop's
    bit for bit, with the input's shape, and a dense input's strides (what the next layer reads without a copy)."""
    from sparsesnn.deploy.lif import InferenceLIF
    from sparsesnn.neuron.lif import LIF

    neuron = LIF(tau=2.0, v_reset=0.0 if hard_reset else None)
    compiled, plain = InferenceLIF(neuron, "numba"), InferenceLIF(neuron, "torch")
    x = torch.randn(4, 3, 5, 6, generator=torch.Generator().manual_seed(1)) * 2
    for name, xi in _memory_orders(x).items():
        for _ in range(2):  # the second call takes the remembered order
            got = compiled(xi)
            assert torch.equal(got, plain(xi)), name
            assert torch.equal(got, plain(x.contiguous())), name
            if name != "strided":
                assert got.stride() == xi.stride(), name
    assert 0 < float(compiled(x).mean()) < 1


@pytest.mark.parametrize("layout", ["rows", "blocks", "columns", "direct"])
def test_the_conv_scan_finds_every_input_in_either_memory_order_and_adds_in_the_same_order(layout) -> None:  # type: ignore[no-untyped-def]
    """The kernels test eight inputs per load: 13 channels (a load of 8 and 5 one by one in channels-last order) on
    an 11 x 9 map (12 loads and 3 one by one per channel in NCHW order), spikes and analog values, a NaN counted as
    an input and a -0.0 not. Both memory orders give the same channel lists, so the same sums bit for bit."""
    torch.manual_seed(3)
    conv = block_structured_(nn.Conv2d(13, 16, 3, padding=1), 0.5, 2)
    event = EventConv2d(conv, "numba", layout)
    for x in (spikes((2, 13, 11, 9), 0.2, 5), spikes((2, 13, 11, 9), 0.6, 6) * torch.randn(2, 13, 11, 9)):
        x[0, 12, 10, 8] = 1.0  # the last input of the last tail
        x[1, 0, 0, 0] = -0.0
        nchw, nhwc = event(x), event(x.contiguous(memory_format=torch.channels_last))
        assert torch.equal(nchw, nhwc)
        torch.testing.assert_close(nchw, conv(x).detach(), atol=1e-5, rtol=1e-5)
    x = spikes((1, 13, 11, 9), 0.2, 7)
    x[0, 9, 4, 4] = float("nan")
    assert torch.isnan(event(x)[0, :, 3:6, 3:6]).any() and not torch.isnan(event(x)[0, :, :2, :2]).any()


@pytest.mark.parametrize("layout", ["csc", "blocks", "columns"])
def test_the_linear_scan_finds_every_input(layout) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(4)
    linear = block_structured_(nn.Linear(21, 10), 0.5, 3)  # 21 inputs: two loads of 8 and 5 one by one
    event = EventLinear(linear, "numba", layout)
    x = spikes((6, 21), 0.3, 8) * torch.randn(6, 21)
    x[:, 20] = 2.0
    x[:, 7] = 1.5
    torch.testing.assert_close(event(x), linear(x).detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["rows", "blocks", "columns", "direct"])
def test_the_conv_takes_strided_and_float64_input(layout) -> None:  # type: ignore[no-untyped-def]
    """Input in neither memory order the kernels read in place (a strided view), or not float32, gives the dense
    conv's output, through ``forward`` and ``charge`` alike (both go through ``EventConv2d.kernel_input``)."""
    torch.manual_seed(6)
    conv = block_structured_(nn.Conv2d(4, 8, 3, padding=1), 0.5, 5)
    event = EventConv2d(conv, "numba", layout)
    wide = spikes((2, 4, 9, 14), 0.3, 9)
    strided = wide[..., ::2]  # [2, 4, 9, 7], neither NCHW- nor channels-last-contiguous
    assert not (strided.is_contiguous() or strided.is_contiguous(memory_format=torch.channels_last))
    expected = conv(strided.contiguous()).detach()
    torch.testing.assert_close(event(strided), expected, atol=1e-5, rtol=1e-5)
    charged = torch.from_numpy(event.charge(strided)).permute(0, 3, 1, 2)
    torch.testing.assert_close(charged, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(event(strided.double()), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [2, 4, 5, 9])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_blocks_add_a_samples_steps_together_with_the_same_outputs(steps, threads) -> None:  # type: ignore[no-untyped-def]
    """``charge(flat, steps)`` (a sample's steps sharing each block's load, in groups of four: 5 and 9 steps leave a
    group of one) equals the one-row kernel bit for bit, on spikes and analog values, for rows with no input, and
    split over threads by sample."""
    torch.manual_seed(steps)
    event = EventLinear(block_structured_(nn.Linear(40, 13), 0.3, 3), "numba", "blocks")
    batch = 17
    x = spikes((steps, batch, 40), 0.2, steps) * torch.where(torch.arange(batch) % 2 == 0, 1.0, -1.7)[:, None]
    x[:, 3] = 0.0  # a sample with no input at any step
    x[1, 5] = 0.0  # and one step of another
    flat = x.reshape(steps * batch, 40)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        assert (event.threads.threads_for(steps * batch) > 1) == (threads > 1)
        grouped = event.charge(flat, steps)
    finally:
        torch.set_num_threads(previous)
    assert grouped.shape == (steps * batch, 16)
    assert torch.equal(torch.from_numpy(grouped), torch.from_numpy(event.charge(flat)))
    torch.testing.assert_close(torch.from_numpy(grouped[:, :13]), event(flat), rtol=0, atol=0)
