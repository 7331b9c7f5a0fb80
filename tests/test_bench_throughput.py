"""Smoke test of bench/throughput.py in quick mode: every variant runs and the JSON carries the ratios."""

from __future__ import annotations

import json
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
    assert result["config"]["quick"] is True
    assert result["config"]["batch"] == 16
    assert set(result["variants"]) == set(bench.VARIANTS)
    for name, v in result["variants"].items():
        sps = v["samples_per_s"]
        assert len(sps["per_round"]) == result["config"]["rounds"] == 2, name
        assert all(s > 0 for s in sps["per_round"]), name
        assert sps["min"] <= sps["median"] <= sps["max"], name
        assert v["step_ms"]["median"] > 0, name
    for key in RATIOS:
        ratio = result["ratios"][key]
        assert ratio["median"] > 0 and len(ratio["per_round"]) == 2, key
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
