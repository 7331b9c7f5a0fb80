"""The Triton LIF kernels, run on the CPU by Triton's interpreter, against the torch loops they replace.

CI has no GPU, so :mod:`sparsesnn.neuron.kernels.triton_kernels` would otherwise never run there. ``TRITON_INTERPRET=1``
makes ``triton.jit`` build interpreted kernels that run on CPU tensors, but it is read when a kernel is decorated,
i.e. when the module is first imported, and the rest of the suite imports Triton normally. So the comparison runs in
a fresh interpreter: the test launches this file as a script with ``TRITON_INTERPRET=1`` (safe under pytest-xdist:
nothing is shared with the worker's process), and the script prints one line per case that disagrees.

Every combination of dtype (float32, bfloat16, float16) x decay_input x hard / soft reset x detach_reset x constant /
learnable ``1/tau`` is checked, the surrogate rotating through the five the kernels know: the forward kernel's spikes
equal the loop's and its charge is within the dtype's rounding; the backward kernel's ``dL/dX`` is within the dtype's
rounding and its ``dL/d(1/tau)`` (a float32 sum over neurons, in another order) within float32 rounding of the sum.
The neuron count spans two programs of the kernels' block, the second one partly masked.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = 6
NEURONS = 1100  # two programs of 1,024 neurons, the second one mostly masked


def _cases() -> list[tuple[str, bool, bool, bool, bool, int]]:
    """(dtype, decay_input, hard_reset, detach_reset, learnable tau, surrogate code) for every combination."""
    combos = itertools.product(("float32", "bfloat16", "float16"), *([(True, False)] * 4))
    return [(*combo, i % 5) for i, combo in enumerate(combos)]


def _check_all() -> list[str]:
    """Run every case under the interpreter; the list of disagreements (empty when all agree)."""
    import torch
    from triton.runtime.interpreter import InterpretedFunction

    from sparsesnn.neuron.kernels import triton_kernels
    from sparsesnn.neuron.kernels.loops import lif_backward_loop, lif_forward_loop
    from sparsesnn.neuron.kernels.params import SURROGATE_CODES, LIFParameters, surrogate_from_code

    assert triton_kernels.AVAILABLE, "triton did not import"
    assert isinstance(triton_kernels._lif_forward_kernel, InterpretedFunction), "TRITON_INTERPRET was not honoured"
    params = {code: (2.0, 4.0, 1.0, 10.0, 1.0)[code] for code, _ in SURROGATE_CODES.values()}
    failures = []
    for dtype_name, decay_input, hard_reset, detach_reset, learn_tau, code in _cases():
        case = f"{dtype_name} decay_input={decay_input} hard={hard_reset} detach={detach_reset} learn_tau={learn_tau}"
        case += f" surrogate={code}"
        dtype = getattr(torch, dtype_name)
        gen = torch.Generator().manual_seed(len(failures) + 7)
        x = (torch.randn(STEPS, NEURONS, generator=gen) * 1.5 + 0.3).to(dtype)
        grad = torch.randn(STEPS, NEURONS, generator=gen).to(dtype)
        # a learnable 1/tau is a tensor the kernels read, a constant one a float passed by value
        inv_tau = torch.tensor(0.4) if learn_tau else 0.4
        lif = LIFParameters(
            v_threshold=0.8,
            v_reset=-0.2 if hard_reset else 0.0,
            hard_reset=hard_reset,
            decay_input=decay_input,
            detach_reset=detach_reset,
            surrogate=surrogate_from_code(code, params[code]),
        )

        spikes_ref, charge_ref = lif_forward_loop(x, inv_tau, lif)
        spikes, charge = triton_kernels.lif_forward(x, inv_tau, lif)
        if spikes.dtype != dtype or charge.dtype != dtype:
            failures.append(f"{case}: forward outputs in {spikes.dtype} / {charge.dtype}")
        if not torch.equal(spikes, spikes_ref):
            failures.append(f"{case}: {int((spikes != spikes_ref).sum())} spikes differ")
        failures += _close(f"{case}: charge", charge, charge_ref)

        grad_x_ref, grad_inv_tau_ref = lif_backward_loop(grad, charge_ref, inv_tau, lif, learn_tau)
        grad_x, grad_inv_tau = triton_kernels.lif_backward(grad, charge_ref, inv_tau, lif, learn_tau)
        if grad_x.dtype != dtype:
            failures.append(f"{case}: dL/dX in {grad_x.dtype}")
        failures += _close(f"{case}: dL/dX", grad_x, grad_x_ref)
        if learn_tau:
            assert grad_inv_tau_ref is not None
            tol = dict(rtol=1e-5, atol=1e-5 * float(grad.abs().sum()))
            failures += _close(f"{case}: dL/d(1/tau)", grad_inv_tau, grad_inv_tau_ref, **tol)
    return failures


def _close(what: str, got, want, **tol) -> list[str]:  # type: ignore[no-untyped-def]
    """``[]`` when ``got`` is within rounding of ``want`` (torch's default tolerances for their dtype), else a line."""
    import torch

    try:
        torch.testing.assert_close(got, want, **tol)
    except AssertionError as e:
        return [f"{what}: " + " ".join(str(e).split())[:300]]
    return []


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (extra: .[triton])")
def test_triton_kernels_match_the_loops_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, __file__], env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"{len(_cases())} cases agree" in done.stdout, done.stdout[-4000:]


if __name__ == "__main__":
    found = _check_all()
    for line in found:
        print(line)
    print(f"{len(_cases()) - len(found)} cases agree" if not found else f"{len(found)} disagreements")
    sys.exit(1 if found else 0)
