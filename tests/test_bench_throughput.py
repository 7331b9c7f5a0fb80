"""Smoke test of bench/throughput.py in quick mode: every variant runs and the JSON carries the ratios."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.conftest import load_bench

RATIOS = (
    "sparsesnn_over_spikingjelly_samples_per_s",
    "sparsesnn_over_snntorch_samples_per_s",
    "sparsesnn_over_relu_floor_step_time",
)


@pytest.mark.slow
@pytest.mark.peers
def test_quick_run_reports_every_variant_and_the_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("spikingjelly.activation_based")
    pytest.importorskip("snntorch")
    bench = load_bench("throughput")
    out = tmp_path / "t.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0

    result = json.loads(out.read_text())
    assert set(result["variants"]) == set(bench.VARIANTS)
    rounds = result["config"]["rounds"]
    sps = {name: v["samples_per_s"]["per_round"] for name, v in result["variants"].items()}
    step_s = {name: [ms / 1e3 for ms in v["step_ms"]["per_round"]] for name, v in result["variants"].items()}
    for name, v in result["variants"].items():
        s = v["samples_per_s"]
        assert len(sps[name]) == rounds and all(x > 0 for x in sps[name]), name
        assert (s["median"], s["min"], s["max"]) == (statistics.median(sps[name]), min(sps[name]), max(sps[name]))
        assert v["step_ms"]["median"] > 0, name
    ours = "sparsesnn"
    expected = {  # every ratio is that of the variants' own per-round figures
        RATIOS[0]: [a / b for a, b in zip(sps[ours], sps["spikingjelly"], strict=True)],
        RATIOS[1]: [a / b for a, b in zip(sps[ours], sps["snntorch"], strict=True)],
        RATIOS[2]: [a / b for a, b in zip(step_s[ours], step_s["relu-floor"], strict=True)],
    }
    for key in RATIOS:
        ratio = result["ratios"][key]
        assert ratio["per_round"] == pytest.approx(expected[key], rel=1e-6), key
        assert ratio["median"] == statistics.median(ratio["per_round"]), key
    assert result["compile"]["graphs_compiled_during_timed_rounds"] == 0
    assert result["versions"]["spikingjelly"] and result["versions"]["snntorch"]
    assert result["machine"]["threads"] == 2
    assert isinstance(result["machine"]["malloc_tuned"], bool)

    neuron = result["neuron"]["results"]
    assert {"fused-eager", "reference"} <= set(neuron)
    # the fused op saves only H (one input-sized tensor); the reference loop saves several per step
    assert neuron["fused-eager"]["saved_bytes"] < neuron["reference"]["saved_bytes"]
    assert all(n["fwd_bwd_ms"]["median"] > 0 for n in neuron.values())

    # stdout: the JSON object first, then the Markdown table
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.index("\n\n## ")]) == result
    assert "| sparsesnn |" in printed and "sparsesnn / relu-floor step time" in printed
