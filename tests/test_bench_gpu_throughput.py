"""Smoke test of bench/gpu_throughput.py on the CPU (``--device cpu --quick``): the variants parse, run through the
engine's own train step, and the JSON carries step times, ratios and the neuron-alone section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_bench


def test_variant_names_parse_and_bad_ones_are_refused() -> None:
    bench = load_bench("gpu_throughput")
    v = bench.Variant.parse("sparsesnn-esl10-compile-cl")
    assert (v.family, v.compile, v.channels_last, v.esl) == ("sparsesnn", True, True, True)
    assert bench.Variant.parse("spikingjelly-eager").compile is False
    for bad in ("snntorch-eager", "sparsesnn-fast", "relu-esl10"):
        with pytest.raises(ValueError, match="variant"):
            bench.Variant.parse(bad)


@pytest.mark.slow
@pytest.mark.peers
def test_cpu_quick_run_reports_every_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("spikingjelly.activation_based")
    bench = load_bench("gpu_throughput")
    out = tmp_path / "g.json"
    variants = "sparsesnn-eager,sparsesnn-esl10-eager,spikingjelly-eager,relu-eager"
    args = ["--device", "cpu", "--quick", "--nets", "convnet", "--variants", variants, "--json", str(out)]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    net = result["nets"]["convnet/fp32"]
    assert set(net["variants"]) == set(variants.split(","))
    for name, v in net["variants"].items():
        assert "error" not in v, (name, v.get("error"))
        assert v["ms"]["median"] > 0 and len(v["ms"]["per_round"]) == 2, name
    assert net["graphs_during_timing"] == 0
    assert result["nets"]["convnet/bf16"]["variants"]["sparsesnn-eager"]["ms"]["median"] > 0
    assert net["ratios"]["spikingjelly-eager_over_sparsesnn-eager"]["median"] > 0
    assert (
        net["ratios"]["sparsesnn-esl10-eager-cl_over_sparsesnn-eager-cl"]
        if "sparsesnn-eager-cl" in net["variants"]
        else True
    )
    assert result["lif"]["host_us_per_call"]["ours"]["wall_us_fwd_bwd"] > 0
    assert "| convnet/fp32 |" in capsys.readouterr().out
