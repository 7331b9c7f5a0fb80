"""Streaming inference (issue 35): a model stepped one window at a time, membranes carried, gives exactly the
outputs of one T-step call; the stream of a run on an event file; the early-decision curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA
from torch import nn

from sparsesnn.deploy.api import deploy
from sparsesnn.deploy.event_layers import EventConv2d, EventLinear, numba_available
from sparsesnn.deploy.fused import FusedEventBlock
from sparsesnn.deploy.lif import InferenceLIF
from sparsesnn.deploy.passes import StepInvariant
from sparsesnn.deploy.stream import (
    StreamError,
    StreamingLIF,
    cumulative_mean,
    early_decision_curve,
    stream,
    stream_events,
    stream_outputs,
)
from sparsesnn.models.common import SpikingBlock
from sparsesnn.neuron.layers import SeqFolded
from sparsesnn.neuron.lif import LIF, PLIF
from sparsesnn.neuron.spiking import spiking_neuron

BACKENDS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="no numba"))]
NMNIST = DATA / "nmnist"
needs_nmnist = pytest.mark.skipif(not (NMNIST / "Test").is_dir(), reason=f"N-MNIST subset not found at {NMNIST}")


def _busy(net: nn.Module) -> nn.Module:
    """Weights scaled up so that every neuron layer fires, and BatchNorm running statistics that are not the
    identity; frozen."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.requires_grad_(False)


def _net(v_reset: float | None, pool: nn.Module) -> nn.Module:
    """Conv + BatchNorm -> LIF -> pool -> conv -> PLIF -> max pool, flatten, linear -> LIF -> linear; BatchNorm with
    running statistics that are not the identity."""
    torch.manual_seed(0)
    net = nn.Sequential(
        SeqFolded(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)),
        LIF(tau=2.0, v_threshold=0.5, v_reset=v_reset, backend="eager"),
        SeqFolded(pool),
        SeqFolded(nn.Conv2d(8, 16, 3, padding=1)),
        PLIF(init_tau=2.5, v_threshold=0.6, v_reset=v_reset, decay_input=False),
        SeqFolded(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 32)),
        LIF(tau=3.0, v_threshold=0.4, v_reset=v_reset),
        SeqFolded(nn.Linear(32, 10)),
    ).eval()
    return _busy(net)


def _spikes_of(model: nn.Module, x: torch.Tensor, kinds: tuple[type, ...]) -> list[torch.Tensor]:
    got: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _a, out: got.append(out)) for m in model.modules() if isinstance(m, kinds)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return got


def _stepped(s, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    s.reset()
    return torch.stack([s.step(x[t]) for t in range(x.shape[0])])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v_reset", [0.0, -0.2, None], ids=["hard", "hard-negative", "soft"])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("form", ["given", "rewritten", "deployed"])
def test_t_steps_equal_one_t_step_call(backend, v_reset, pool, form) -> None:  # type: ignore[no-untyped-def]
    net = _net(v_reset, nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
    x = (torch.rand(8, 3, 2, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    if form == "given":
        model = net
    elif form == "rewritten":
        model, _ = deploy(net, x, choices={}, backend=backend)
        assert any(isinstance(m, InferenceLIF) for m in model.modules())
    else:
        model, report = deploy(net, x, force=True, backend=backend, repeats=1)
        assert {type(m) for m in model.modules()} >= {EventConv2d, EventLinear, InferenceLIF}
        assert report.layers and all(c.event for c in report.layers.values())
    s = stream(model, backend=backend)
    assert len(s.neurons) == 3 and s.frame_dims == 4
    whole = model(x)
    out = _stepped(s, x)
    assert torch.equal(out, whole)
    # the spikes of every neuron, step by step and in one call
    reference = _spikes_of(model, x, (LIF, InferenceLIF))
    s.reset()
    per_step = [_spikes_of(s.model, x[t : t + 1], (StreamingLIF,)) for t in range(x.shape[0])]
    assert len(reference) == 3
    for i, ref in enumerate(reference):
        assert 0.0 < float(ref.mean()) < 1.0
        assert torch.equal(torch.cat([p[i] for p in per_step]), ref)
    # a few steps per call, in uneven pieces, and a second sample after reset()
    s.reset()
    pieces = [s.step(x[a:b]) for a, b in ((0, 3), (3, 4), (4, 8))]
    assert torch.equal(torch.cat(pieces), whole)
    assert torch.equal(_stepped(s, x.flip(0)), model(x.flip(0)))
    assert s.check(x, model) == 0.0


@pytest.mark.skipif(not numba_available(), reason="the fused blocks call the numba kernels")
@pytest.mark.parametrize("v_reset", [0.0, -0.2, None], ids=["hard", "hard-negative", "soft"])
def test_fused_event_blocks_equal_the_unfused_stream(v_reset) -> None:  # type: ignore[no-untyped-def]
    """The library's block structure (SpikingBlock: conv [+ BN] -> LIF, then a 2x2 max pool), deployed event-driven:
    the stream fuses each block into one call, and its outputs and spike counts equal the unfused stream's and one
    T-step call's, bit for bit, over two samples."""
    torch.manual_seed(0)
    net = nn.Sequential(
        SpikingBlock(
            [nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8)], LIF(tau=2.0, v_threshold=0.5, v_reset=v_reset)
        ),
        SeqFolded(nn.MaxPool2d(2)),
        SpikingBlock([nn.Conv2d(8, 16, 3, padding=1)], PLIF(init_tau=2.5, v_threshold=0.6, v_reset=v_reset)),
        SeqFolded(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10)),
    ).eval()
    net = _busy(net)
    x = (torch.rand(8, 3, 2, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    model, _ = deploy(net, x, force=True, backend="numba", repeats=1)
    fused, plain = stream(model, backend="numba"), stream(model, backend="numba", fuse=False)
    assert sum(isinstance(m, FusedEventBlock) for m in fused.model.modules()) == 2
    assert not any(isinstance(m, FusedEventBlock) for m in plain.model.modules())
    for sample in (x, x.flip(0)):
        fused.reset()
        plain.reset()
        for t in range(sample.shape[0]):
            assert torch.equal(fused.step(sample[t]), plain.step(sample[t]))
            assert fused.last_spikes() == plain.last_spikes() > 0
        assert torch.equal(_stepped(fused, sample), model(sample))
    with pytest.raises(StreamError, match="changed shape"):  # another batch size mid-stream, in a fused block too
        fused.step(x[0, :2])


def test_the_stream_keeps_the_model_it_was_given_untouched_and_counts_spikes() -> None:
    net = _net(0.0, nn.MaxPool2d(2))
    x = (torch.rand(4, 1, 2, 16, 16, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    before = net(x)
    s = stream(net)
    s.step(x[0])
    s.step(x[1])
    assert torch.equal(net(x), before)  # the stream runs a copy; the model's own neurons start from rest
    spikes = _spikes_of(s.model, x[2:3], (StreamingLIF,))
    assert s.last_spikes() == sum(int(t.count_nonzero()) for t in spikes) > 0
    assert s.steps == 2


def test_step_invariant_groups_run_one_step_per_call() -> None:
    """Direct encoding: the static image repeated over T; deploy computes the first conv once. Stepping it gives the
    T-step outputs of the deployed model and of the model as given."""
    torch.manual_seed(4)
    net = nn.Sequential(
        SeqFolded(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)),
        LIF(v_threshold=0.3),
        SeqFolded(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)),
        LIF(v_threshold=0.2, v_reset=None),
        SeqFolded(nn.Linear(10, 4)),
    ).eval()
    image = torch.rand(3, 1, 12, 12)
    x = image.unsqueeze(0).expand(6, *image.shape)
    deployed, report = deploy(net, x, choices={})
    assert report.step_invariant and any(isinstance(m, StepInvariant) for m in deployed.modules())
    for model in (net, deployed):
        s = stream(model)
        assert torch.equal(_stepped(s, x), model(x))
        s.reset()
        assert torch.equal(s.step(x), model(x))  # all T at once: StepInvariant's one-step path inside the stream


def test_refuses_what_it_cannot_carry_state_for() -> None:
    @spiking_neuron
    class MyNeuron(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x > 0).float()

    class MyLIF(LIF):
        pass

    net = nn.Sequential(SeqFolded(nn.Linear(4, 4)), MyNeuron(), SeqFolded(nn.Linear(4, 4)), MyLIF(), LIF())
    with pytest.raises(StreamError, match=r"1 \(MyNeuron\), 3 \(MyLIF\)"):
        stream(net)
    ok = stream(nn.Sequential(SeqFolded(nn.Linear(4, 3)), LIF()))
    assert ok.frame_dims == 2
    ok.step(torch.ones(2, 4))
    with pytest.raises(StreamError, match="changed shape"):
        ok.step(torch.ones(3, 4))
    ok.reset()
    assert ok.step(torch.ones(3, 4)).shape == (3, 3)
    with pytest.raises(StreamError, match="dims"):
        ok.step(torch.ones(4))

    class TimeMean(nn.Module):  # mixes the steps: not a model a stream can run
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(0, keepdim=True).expand_as(x)

    mixed = stream(nn.Sequential(SeqFolded(nn.Linear(4, 3)), TimeMean(), LIF(v_threshold=0.01)))
    with pytest.raises(StreamError, match="differ"):
        mixed.check(torch.randn(5, 2, 4))


def test_early_decision_curve() -> None:
    # 3 samples, T = 4, K = 3: sample 0 right from the start, sample 1 right from step 3 on, sample 2 always wrong
    y = torch.zeros(4, 3, 3)
    y[:, 0, 0] = 5.0
    y[0, 1, 2], y[1:, 1, 1] = 1.0, torch.tensor([0.2, 3.0, 3.0])
    y[:, 2, 2] = 1.0
    labels = torch.tensor([0, 1, 0])
    assert torch.allclose(cumulative_mean(y)[1, 1], torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64))
    curve = early_decision_curve(y, labels, thresholds=(0.3, 0.999))
    assert curve.accuracy == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert curve.within_1pt_fraction == 0.75
    lenient, strict = curve.rule
    assert lenient["accuracy"] == pytest.approx(1 / 3) and lenient["mean_steps"] == 1.0  # all answer at step 1
    assert strict["accuracy"] == pytest.approx(2 / 3) and strict["mean_steps"] == 4.0  # nobody sure: the T answer
    d = curve.as_dict()
    assert d["fraction_of_T"] == [0.25, 0.5, 0.75, 1.0] and d["final_accuracy"] == pytest.approx(2 / 3)
    s = stream(nn.Sequential(SeqFolded(nn.Linear(4, 3)), LIF()))
    x, labels = torch.randn(5, 6, 4), torch.arange(6) % 3
    outputs, got = stream_outputs(s, [(x[:, :4], labels[:4]), (x[:, 4:], labels[4:])])
    assert torch.equal(outputs, s.model(x)) and torch.equal(got, labels)


def test_stream_events_bins_and_steps_every_window() -> None:
    from sparsesnn.data.events import make_events
    from sparsesnn.data.stream import EventBinner

    torch.manual_seed(0)
    net = nn.Sequential(
        SeqFolded(nn.Flatten(), nn.Linear(2 * 4 * 4, 5)), LIF(v_threshold=0.3), SeqFolded(nn.Linear(5, 3))
    )
    rng = np.random.default_rng(0)
    n = 400
    events = make_events(
        rng.integers(0, 4, n), rng.integers(0, 4, n), np.sort(rng.integers(0, 1000, n)), rng.random(n) < 0.5
    )
    binner = EventBinner((4, 4), 100)
    frames = torch.from_numpy(binner.frames([events]))
    s = stream(net, frame_dims=4)
    windows: list[dict] = []
    summary = stream_events(s, binner, [events[:150], events[150:151], events[151:]], on_window=windows.append)
    expected = s.model(frames.unsqueeze(1))[:, 0].double()
    mean = expected.cumsum(0) / torch.arange(1, len(frames) + 1).view(-1, 1)
    assert [w["prediction"] for w in windows] == mean.argmax(-1).tolist()
    assert [w["end_us"] for w in windows] == [int(events["t"][0]) + 100 * (k + 1) for k in range(len(frames))]
    assert summary["windows"] == len(frames) and summary["events"] == n
    assert summary["final_prediction"] == windows[-1]["prediction"]
    assert summary["latency_ms_p50"] <= summary["latency_ms_p99"] and summary["realtime_factor"] > 0
    # paced to the timestamps, with a fake clock: the sleeps add up to the stream's duration
    now = [0.0]
    paced = stream_events(
        s, binner, [events[:200], events[200:]], realtime=True, clock=lambda: now[0],
        sleep=lambda dt: now.__setitem__(0, now[0] + dt),
    )  # fmt: skip
    assert paced["wall_s"] == pytest.approx((int(events["t"][-1]) - int(events["t"][0])) / 1e6)
    # reset every 3 windows: the answer restarts
    windows.clear()
    stream_events(s, binner, [events], reset_every=3, on_window=windows.append)
    again = s.model(frames[3:6].unsqueeze(1))[:, 0].double().mean(0)
    assert windows[5]["prediction"] == int(again.argmax())


# ------------------------------------------------------------------------------------------ a tiny N-MNIST run

TINY_NMNIST = """
[run]
name = "tiny_nmnist"
seed = 0
epochs = 1
max_steps_per_epoch = 4

[data]
name = "nmnist"
root = "{root}"
batch_size = 16
eval_batch_size = 50
time_steps = 8
max_train_samples = 64
max_test_samples = 20
params = {{ n_frames = 8, split_by = "time" }}

[model]
name = "convnet"
params = {{ channels = [4, 8] }}

[neuron]
backend = "eager"

[optim]
name = "adam"
lr = 0.003

[sparse]
method = "dense"
"""


@pytest.fixture(scope="module")
def nmnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (NMNIST / "Test").is_dir():
        pytest.skip(f"N-MNIST subset not found at {NMNIST}")
    from sparsesnn.cli import main

    root = tmp_path_factory.mktemp("stream")
    config = root / "tiny.toml"
    config.write_text(TINY_NMNIST.format(root=NMNIST))
    run_dir = root / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


@needs_nmnist
def test_cli_streams_an_nmnist_file_window_by_window(nmnist_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sparsesnn.cli import main
    from sparsesnn.data.stream import iter_events
    from sparsesnn.deploy.stream import stream_run

    path = sorted((NMNIST / "Test" / "3").glob("*.bin"))[0]
    assert main(["stream", str(nmnist_run), "--input", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    windows, summary = lines[:-1], lines[-1]["summary"]
    assert summary["windows"] == len(windows) >= 8 and summary["events"] > 1000
    assert [w["window"] for w in windows] == list(range(len(windows)))
    assert {"end_us", "prediction", "confidence", "margin", "spikes", "latency_ms"} <= set(windows[0])
    assert 0.29 < summary["stream_s"] < 0.32 and summary["realtime_factor"] > 1
    # the same answers as the run's deployed model called once on the live frames
    rs = stream_run(nmnist_run)
    frames = torch.from_numpy(rs.binner.frames(iter_events(path))).unsqueeze(1)
    whole = rs.stream.model(frames)[:, 0].double()
    mean = whole.cumsum(0) / torch.arange(1, len(frames) + 1).view(-1, 1)
    assert [w["prediction"] for w in windows] == mean.argmax(-1).tolist()
    # the model as read from the run, stepped through the dataset's own test frames, equals its one call
    x, _ = next(iter(rs.test_batches(4)))
    assert rs.stream.check(x) == 0.0


@needs_nmnist
def test_cli_writes_the_early_decision_curve(
    nmnist_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparsesnn.cli import main

    assert main(["stream", str(nmnist_run), "--curve", str(tmp_path / "curve")]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    stored = json.loads((tmp_path / "curve" / "early_decision.json").read_text())
    assert stored["samples"] == 20 and stored["steps"] == 8 and len(stored["accuracy"]) == 8
    assert printed["accuracy"] == stored["accuracy"] and 0 < stored["within_1pt_fraction"] <= 1
    assert (tmp_path / "curve" / "early_decision.png").stat().st_size > 1000
    assert [r["threshold"] for r in stored["margin_rule"]] == [0.1, 0.3, 0.5, 0.7, 0.9]
    with pytest.raises(SystemExit):
        main(["stream", str(nmnist_run)])  # --input or --curve


@needs_nmnist
def test_bench_stream_latency_on_the_tiny_run(
    nmnist_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import DATA, load_bench

    bench = load_bench("stream_latency")
    out = tmp_path / "stream.json"
    assert (
        bench.main(
            [
                "--run",
                str(nmnist_run),
                "--data",
                str(DATA / "nmnist" / "Test"),
                "--limit",
                "3",
                "--rounds",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["files"] == 3 and result["windows"] >= 24 and result["realtime_factor"] > 0
    assert result["latency_ms_p50"] <= result["latency_ms_p99"]
    assert len(result["live_windows"]["accuracy"]) == 8 and result["dataset_frames"]["samples"] == 20
    assert (tmp_path / "stream_latency" / "live_windows.png").is_file()
    assert "real-time factor" in capsys.readouterr().out
