"""Bit-identity of :class:`Quantizer` against outputs recorded before it was split into parts.

``tests/data/quant_compat.json`` holds the SHA-256 of every output, gradient and state tensor that :func:`cases`
produces (float32, CPU, fixed seeds, element-wise arithmetic and min/max/mean/std reductions only); regenerate
it with ``python tests/test_quant_compat.py`` only when a change of numbers is intended.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

from srq.quant import Quantizer

REFERENCE = Path(__file__).parent / "data" / "quant_compat.json"


def _digest(t: torch.Tensor | None) -> str:
    t = torch.zeros(0) if t is None else t.detach().contiguous().cpu()
    return hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest()[:16]


def _run(q: Quantizer, x: torch.Tensor, *, extra: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """Calibrate on ``x``, then record: forward-only output, autograd output and its gradients, projected state."""
    q.start_calibration()
    q(x)
    q.finish_calibration()
    out: dict[str, torch.Tensor | None] = {}
    with torch.no_grad():
        out["fwd"] = q(x)
    xg = x.clone().requires_grad_(True)
    if extra is not None:
        q.extra_bits = extra
    y = q(xg)
    weight = torch.linspace(-1.0, 2.0, y.numel()).reshape(y.shape)
    (y * weight).sum().backward()
    out["out"] = y
    out["grad_x"] = xg.grad
    for name, p in q.named_parameters():
        out[f"grad_{name}"] = p.grad
    if extra is not None:
        out["grad_extra"] = extra.grad
        q.extra_bits = None
    with torch.no_grad():
        for p in q.parameters():
            p.sub_(0.3 * p.grad.sign() if p.grad is not None else 0)
    q.project_bounds_()
    for name, t in q.state_dict().items():
        out[f"state_{name}"] = t
    return out


def cases() -> Iterator[tuple[str, dict[str, torch.Tensor | None]]]:
    """Every grid, granularity, bit-width option and normaliser on fixed inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g) * 1.5 + 0.2
    relu = x.clamp_min(0) * (torch.rand(x.shape, generator=g) > 0.3)
    for bits in (1, 2, 3, 4, 8):
        for mode in ("uniform", "affine", "symmetric", "binary"):
            if mode == "binary" and bits > 1:
                continue
            for axis in (None, 0):
                kw = dict(channel_axis=axis, num_channels=2 if axis == 0 else 1)
                yield f"{mode}-{bits}-{axis}", _run(Quantizer(bits, mode=mode, **kw), x)
        yield f"levels-{bits}", _run(Quantizer(bits, one_bit="levels", channel_axis=0, num_channels=2), x)
    yield "percentile", _run(Quantizer(4, observer="percentile", observer_kwargs={"low": 5.0, "high": 90.0}), x)
    yield "omse", _run(Quantizer(3, mode="affine", observer="omse", observer_kwargs={"bits": 8}), x)
    for mode in ("uniform", "affine"):
        for bits in (2, 4):
            q = Quantizer(bits, mode=mode, channel_axis=0, num_channels=2)
            q.enable_bit_offset(-1, 1)
            with torch.no_grad():
                q.bit_offset.fill_(0.4)
            yield f"offset-{mode}-{bits}", _run(q, relu if mode == "affine" else x)
            q = Quantizer(bits, mode=mode)
            q.enable_bit_offset()
            q.set_bits(bits + 1)
            yield f"set_bits-{mode}-{bits}", _run(q, x)
            extra = torch.tensor([0.7, -0.2], requires_grad=True)
            yield f"extra-{mode}-{bits}", _run(Quantizer(bits, mode=mode), x, extra=extra)
            extra = torch.tensor(1.3, requires_grad=True)
            q = Quantizer(bits, mode=mode)
            q.enable_bit_offset()
            yield f"extra0-offset-{mode}-{bits}", _run(q, x, extra=extra)
    for dan in ("range", "std", "capped"):
        for mode in ("uniform", "affine", "symmetric"):
            for inp_name, inp in (("x", x), ("relu", relu), ("pooled", x.amax((2, 3), keepdim=True)),
                                  ("tokens", x.flatten(2).transpose(1, 2))):
                axis = -1 if inp_name == "tokens" else 1
                q = Quantizer(3, mode=mode, dan=dan, dan_axis=axis, dan_channels=inp.shape[axis])
                yield f"dan-{dan}-{mode}-{inp_name}", _run(q, inp)
            q = Quantizer(2, mode=mode, dan=dan, dan_channels=3)
            if mode != "symmetric":
                q.enable_bit_offset()
            yield f"dan-{dan}-{mode}-extra", _run(q, relu, extra=torch.tensor([0.5, -0.5], requires_grad=True))
    for window in (2, 4, 8):
        for mode in ("uniform", "affine"):
            yield f"window-{window}-{mode}", _run(Quantizer(3, mode=mode, dan="range", dan_window=window), relu)


def digests() -> dict[str, str]:
    return {f"{case}/{key}": _digest(t) for case, out in cases() for key, t in out.items()}


def machine() -> str:
    """What the float results depend on besides the code: torch's version and the CPU kernels it picks."""
    return f"torch {torch.__version__.split('+')[0]}, cpu {torch.backends.cpu.get_cpu_capability()}"


def test_outputs_gradients_and_state_are_bit_identical_to_the_reference():
    expected = json.loads(REFERENCE.read_text())
    recorded_on = expected.pop("_machine")
    if recorded_on != machine():  # reductions may round differently with other kernels
        pytest.skip(f"reference recorded with {recorded_on}, this is {machine()}")
    got = digests()
    assert sorted(got) == sorted(expected)
    assert [k for k in got if got[k] != expected[k]] == []


@pytest.mark.parametrize("mode, keys", [
    ("uniform", ["lower", "upper", "initialized"]),
    ("symmetric", ["alpha", "initialized"]),
])
def test_state_dict_keys_are_unchanged(mode, keys):
    assert list(Quantizer(3, mode=mode).state_dict()) == keys
    q = Quantizer(3, mode="affine", dan="capped", dan_channels=2)
    q.enable_bit_offset()
    assert list(q.state_dict()) == ["lower", "upper", "bit_offset", "initialized", "dan_low", "dan_high"]


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"_machine": machine(), **digests()}, indent=0, sort_keys=True) + "\n")
