"""Every registered model: shapes, finite outputs and gradients, parameter counts, and the paper-specific details."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from sparsesnn.models import MODELS, NeuronSpec, build_model, count_parameters
from sparsesnn.models.sdsnn_cifar import SDSNNCifar
from sparsesnn.neuron.lif import LIF, PLIF

EAGER = NeuronSpec(backend="eager")
T, B = 2, 2

# Tiny versions of every registered model (name -> factory kwargs); the input is [T, B, in_channels, size, size].
TINY: dict[str, dict[str, Any]] = {
    "mlp": {"in_channels": 1, "input_size": 4, "hidden": (8,)},
    "convnet": {"in_channels": 1, "input_size": 8, "channels": (4, 8)},
    "sdsnn_cifar": {"in_channels": 3, "input_size": 8, "channels": (4, 8, 8), "hidden": 16},
    "vggsnn": {"in_channels": 2, "input_size": 16, "cfg": (4, 8, "P", 8, 8, "P", 16, 16, "P", 16, 16, "P")},
    "resnet19": {"in_channels": 3, "input_size": 8, "stem_channels": 4, "widths": (4, 8, 16), "hidden": 8},
    "vgg16": {
        "in_channels": 3,
        "input_size": 32,
        "cfg": (4, 4, "P", 8, 8, "P", 8, 8, 8, "P", 16, 16, 16, "P", 16, "P"),
    },
}


@pytest.fixture
def no_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let neurons with ``backend="auto"`` (the models' default specs) run eagerly: no compile time in tests."""
    monkeypatch.setenv("SPARSESNN_NO_COMPILE", "1")


def _input(kw: dict[str, Any], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = kw["input_size"]
    return 2.0 * torch.rand(T, B, kw["in_channels"], size, size, generator=g)


def _check_forward_backward(model: nn.Module, x: torch.Tensor, num_classes: int, spiking: bool) -> None:
    out = model(x)
    assert out.shape == (T, B, num_classes)
    assert torch.isfinite(out).all()
    if spiking:
        assert set(out.unique().tolist()) <= {0.0, 1.0}
    out.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


def test_tiny_settings_cover_every_registered_model() -> None:
    assert set(TINY) == set(MODELS.names())


@pytest.mark.parametrize("spiking_output", [False, True])
@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_with_neuron_override(name: str, spiking_output: bool) -> None:
    torch.manual_seed(0)
    kw = TINY[name]
    model = build_model(name, num_classes=5, neuron=EAGER, spiking_output=spiking_output, **kw)
    assert all(m.backend == "eager" for m in model.modules() if isinstance(m, LIF))
    _check_forward_backward(model, _input(kw), 5, spiking_output)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_with_default_neurons(name: str, no_compile: None) -> None:
    torch.manual_seed(0)
    kw = TINY[name]
    model = build_model(name, num_classes=3, **kw)
    _check_forward_backward(model, _input(kw, seed=1), 3, spiking=name == "sdsnn_cifar")


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("sdsnn_cifar", {"input_size": 8}),
        ("vggsnn", {"input_size": 16}),
        ("resnet19", {"input_size": 8}),
        ("vgg16", {"input_size": 32}),
    ],
)
def test_full_width_forward(name: str, kw: dict[str, Any], no_compile: None) -> None:
    """The default architectures (full width, small frames) run; forward only, one sample, to stay cheap."""
    model = build_model(name, **kw).eval()
    c = 2 if name == "vggsnn" else 3
    with torch.no_grad():
        out = model(torch.rand(2, 1, c, kw["input_size"], kw["input_size"]))
    assert out.shape == (2, 1, 10)
    assert torch.isfinite(out).all()


# Exact trainable-parameter counts of the default (full-size) models, 10 classes.
#
# mlp 784-800-10:           784*800+800 = 628,000;  800*10+10 = 8,010                               -> 636,010
# convnet (32, 64), 1x28x28: conv1 1*32*9 = 288, bn1 64; conv2 32*64*9 = 18,432, bn2 128;
#                           fc 64*7*7 = 3136 -> 10: 31,370                                          -> 50,282
# sdsnn_cifar, 3x32x32 (convs bias-free, BN 2 per channel, PLIF 1 per conv layer):
#   conv 3*128*9 = 3,456  128*128*9 = 147,456  128*256*9 = 294,912  256*256*9 = 589,824
#        256*512*9 = 1,179,648  512*512*9 = 2,359,296                     convs 4,574,592
#   BN 2*(128+128+256+256+512+512) = 3,584; PLIF w x6 = 6
#   fc1 32,768*512+512 = 16,777,728; fc2 512*10+10 = 5,130                               -> 21,361,040
# vggsnn, 2x48x48 (convs with bias):
#   weights 2*64*9 = 1,152  64*128*9 = 73,728  128*256*9 = 294,912  256*256*9 = 589,824
#           256*512*9 = 1,179,648  3 x 512*512*9 = 7,077,888                 9,217,152
#   conv bias 64+128+256+256+4*512 = 2,752; BN 2*2,752 = 5,504; fc 512*3*3*10+10 = 46,090     -> 9,271,498
# resnet19, 3x32x32, stem 128 (convs bias-free):
#   stem 3*128*9 = 3,456; stage1 6 x 128*128*9 = 884,736
#   stage2 128*256*9 + 5 x 256*256*9 = 3,244,032, shortcut 128*256 = 32,768
#   stage3 256*512*9 + 3 x 512*512*9 = 8,257,536, shortcut 256*512 = 131,072           convs 12,553,600
#   BN 2*(128 + 6*128 + 7*256 + 5*512) = 10,496 (the shortcut BNs included)
#   fc1 512*256+256 = 131,328; fc2 256*10+10 = 2,570                                    -> 12,697,994
#   stem 64 (TET's code): stem 1,728 (-1,728), stage1 first conv 64*128*9 = 73,728 (-73,728),
#   new shortcut 64*128 = 8,192 + BN 256, stem BN 128 (-128)                            -> 12,630,858
# vgg16, 3x32x32 (convs with bias): conv weights 14,710,464 + bias 4,224 = 14,714,688
#   BN 2*4,224 = 8,448; fc 512*10+10 = 5,130                                           -> 14,728,266
#   hidden=(4096, 4096): -5,130 + 512*4096+4096 + 4096*4096+4096 + 4096*10+10           -> 33,646,666
@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("mlp", {}, 636_010),
        ("convnet", {}, 50_282),
        ("sdsnn_cifar", {}, 21_361_040),
        ("vggsnn", {}, 9_271_498),
        ("resnet19", {}, 12_697_994),
        ("resnet19", {"stem_channels": 64}, 12_630_858),
        ("vgg16", {}, 14_728_266),
        ("vgg16", {"hidden": (4096, 4096), "dropout": 0.5}, 33_646_666),
    ],
)
def test_parameter_counts(name: str, kw: dict[str, Any], expected: int) -> None:
    assert count_parameters(build_model(name, **kw)) == expected


def _layers(model: nn.Module, kind: type[nn.Module]) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_sdsnn_layout_and_neurons() -> None:
    model = build_model("sdsnn_cifar")
    assert len(_layers(model, nn.MaxPool2d)) == 2  # 32 -> 16 -> 8: no pool after the last conv pair
    linears = _layers(model, nn.Linear)
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(512 * 8 * 8, 512), (512, 10)]
    assert all(c.bias is None for c in _layers(model, nn.Conv2d))
    plif = _layers(model, PLIF)
    assert len(plif) == 6 and all(n.v_threshold == 1.0 and n.v_reset == 0.0 for n in plif)
    assert all(abs(float(n.inv_tau().detach()) - 0.5) < 1e-6 for n in plif)
    fc_neurons = [n for n in _layers(model, LIF) if not isinstance(n, PLIF)]
    assert len(fc_neurons) == 2 and all(n.v_threshold == 0.5 and n.tau == 2.0 for n in fc_neurons)
    # an explicit neuron applies to every neuron unless fc_neuron is given too
    over = build_model("sdsnn_cifar", channels=(4, 4, 4), hidden=8, neuron=EAGER)
    assert all(type(n) is LIF and n.v_threshold == 1.0 for n in _layers(over, LIF))
    both = SDSNNCifar(channels=(4, 4, 4), hidden=8, neuron=EAGER, fc_neuron=EAGER.with_(v_threshold=0.5))
    assert sorted(n.v_threshold for n in _layers(both, LIF)) == [0.5, 0.5] + [1.0] * 6


def test_vggsnn_flatten_follows_input_size() -> None:
    assert _layers(build_model("vggsnn"), nn.Linear)[0].in_features == 512 * 3 * 3
    small = dict(TINY["vggsnn"], input_size=32)
    assert _layers(build_model("vggsnn", **small), nn.Linear)[0].in_features == 16 * 2 * 2
    assert len(_layers(build_model("vggsnn"), nn.AvgPool2d)) == 4


def test_resnet19_layout() -> None:
    model = build_model("resnet19")
    convs = _layers(model, nn.Conv2d)
    assert sum(c.kernel_size == (3, 3) for c in convs) == 17  # 17 conv3x3 + 2 FC = 19 weight layers
    assert sum(c.kernel_size == (1, 1) for c in convs) == 2  # shortcuts into stages 2 and 3
    assert len(_layers(model, nn.Linear)) == 2
    assert sum(c.kernel_size == (1, 1) for c in _layers(build_model("resnet19", stem_channels=64), nn.Conv2d)) == 3


def test_vgg16_pool_and_head_options() -> None:
    assert len(_layers(build_model("vgg16"), nn.MaxPool2d)) == 5
    assert len(_layers(build_model("vgg16", pool="avg"), nn.AvgPool2d)) == 5
    head = build_model("vgg16", hidden=(4096, 4096), dropout=0.5)
    assert [fc.out_features for fc in _layers(head, nn.Linear)] == [4096, 4096, 10]
    assert len(_layers(head, nn.Dropout)) == 2


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("sdsnn_cifar", {"input_size": 2}),
        ("vggsnn", {"input_size": 8}),
        ("vgg16", {"input_size": 16}),
        ("vgg16", {"pool": "median"}),
        ("vgg16", {"cfg": (8, "X")}),
        ("resnet19", {"input_size": 2}),
        ("resnet19", {"blocks": (3, 3)}),
    ],
)
def test_bad_settings_raise(name: str, kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        build_model(name, **kw)


def test_tet_neuron_matches_tet_lifspike() -> None:
    """TET's ``LIFSpike``: ``mem = 0.5 * mem + x``, spike when ``mem > 1``, ``mem *= 1 - spike``."""
    from sparsesnn.models.vggsnn import TET_NEURON

    x = 1.5 * torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(0))
    mem, ref = torch.zeros(3, 5), []
    for t in range(x.shape[0]):
        mem = 0.5 * mem + x[t]
        spike = (mem > 1.0).float()
        mem = (1.0 - spike) * mem
        ref.append(spike)
    assert torch.equal(TET_NEURON.with_(backend="eager").build()(x), torch.stack(ref))
