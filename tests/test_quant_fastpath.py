"""The evaluation fast path: forward-only fake quantization (``*_fwd``) and the cached quantized weight.

Without autograd, :class:`Quantizer` uses the ``*_fwd`` functions; they must give the values of the STE
functions (``torch.equal``: zeros may differ in sign), rounding ties included. ``QuantLayerMixin`` caches
``Q_w(W)`` under ``torch.no_grad()``, must recompute it after any change of the weight, the bounds or the bits,
and must not cache a layer with a ``weight_delta``. With gradients wanted, the STE path must still run.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import srq.quant.grids.affine
import srq.quant.grids.binary
import srq.quant.grids.symmetric
import srq.quant.grids.uniform
from srq.quant import QuantConv2d, QuantLinear, Quantizer
from srq.quant.functional import (binarize, binarize_fwd, fake_quant, fake_quant_affine, fake_quant_affine_fwd,
                                  fake_quant_fwd, fake_quant_symmetric, fake_quant_symmetric_fwd)

MODES = ["uniform", "affine", "symmetric", "binary"]
DTYPES = [torch.float32, torch.float64]


def _inputs(lower: torch.Tensor, upper: torch.Tensor, bits: int, channels: int = 6) -> torch.Tensor:
    """(channels, N): random values reaching well outside ``[lower, upper]`` (shape () or (channels, 1)), then
    per channel every grid point and midpoint (rounding ties, up to float error) of the uniform and of the
    integer-zero-point grid, from two steps below to two steps above the range."""
    torch.manual_seed(0)
    lower, upper = lower.expand(channels, 1), upper.expand(channels, 1)
    x = torch.randn(channels, 2000, dtype=lower.dtype) * (upper - lower) + lower
    k = torch.arange(-2, 2**bits + 2, 0.5, dtype=lower.dtype)
    n = 2**bits - 1
    s_uniform, s_affine = (upper - lower) / n, (upper.clamp(min=0) - lower.clamp(max=0)) / n
    return torch.cat([x, lower + k * s_uniform, k * s_affine], dim=1)


PAIRS = {"uniform": (fake_quant, fake_quant_fwd), "affine": (fake_quant_affine, fake_quant_affine_fwd),
         "symmetric": (fake_quant_symmetric, fake_quant_symmetric_fwd), "binary": (binarize, binarize_fwd)}


def _args(mode: str, lower: torch.Tensor, upper: torch.Tensor, bits: int) -> tuple:
    """The arguments after ``x`` of a mode's functions (symmetric/binary: ``α = max(|lower|, |upper|)``)."""
    alpha = torch.maximum(lower.abs(), upper.abs())
    return {"uniform": (lower, upper, bits), "affine": (lower, upper, bits), "symmetric": (alpha, bits),
            "binary": (alpha,)}[mode]


# ---- functional: forward-only twins equal the STE versions --------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("mode, bits", [(m, b) for m in MODES for b in (1, 2, 4, 8) if (m, b) != ("symmetric", 1)])
def test_forward_only_functions_equal_ste_functions(mode, bits, per_channel, dtype):
    torch.manual_seed(bits)
    shape = (6, 1) if per_channel else ()
    lower = -torch.rand(shape, dtype=dtype) * 2 + 0.3  # some ranges exclude 0 (affine widens them)
    upper = lower + 0.1 + torch.rand(shape, dtype=dtype) * 3
    x = _inputs(lower, upper, bits)
    ste, fwd = PAIRS[mode]
    args = _args(mode, lower, upper, bits)
    with torch.no_grad():
        expected, out = ste(x, *args), fwd(x, *args)
    assert out.dtype == expected.dtype and out.shape == x.shape
    assert torch.equal(out, expected)
    assert x.equal(_inputs(lower, upper, bits))  # the input is left alone


def test_affine_forward_only_keeps_zero_and_clips_like_ste():
    # (±inf is left out: the STE gives NaN there, inf + (round(inf) − inf); the forward-only path clips it)
    x = torch.tensor([-1e30, -3.0, -0.0, 0.0, 1e-9, 2.5, 7.0, 1e30])
    lower, upper = torch.tensor(-1.0), torch.tensor(2.0)
    torch.testing.assert_close(fake_quant_affine_fwd(x, lower, upper, 2),
                               fake_quant_affine(x, lower, upper, 2), rtol=0, atol=0)
    assert fake_quant_affine_fwd(x, lower, upper, 2)[2:4].eq(0).all()


# ---- Quantizer: which path runs, and that both agree -----------------------------------------------------

def _quantizer(mode: str, per_channel: bool, dan: str | None = None) -> Quantizer:
    q = Quantizer(4, mode=mode, channel_axis=0 if per_channel else None, num_channels=6, dan=dan)
    torch.manual_seed(1)
    lower = -0.2 - torch.rand(6 if per_channel else 1)
    q.set_bounds(lower, 0.3 + torch.rand_like(lower) * 2)
    return q


STE_NAMES = ("fake_quant", "fake_quant_affine", "fake_quant_symmetric", "binarize")
FWD_NAMES = tuple(f"{name}_fwd" for name in STE_NAMES)


def _disable(patcher, names: tuple[str, ...]) -> None:
    """Make the functions ``names`` fail when the quantizer's grids call them."""
    def fail(*args, **kwargs):
        raise AssertionError("a disabled quantization path ran")
    grids = srq.quant.grids
    modules = (grids.uniform, grids.affine, grids.symmetric, grids.binary)
    for name in names:
        users = [m for m in modules if hasattr(m, name)]
        assert users, f"no grid calls {name}"
        for module in users:
            patcher.setattr(module, name, fail)


@pytest.fixture
def ste_only(monkeypatch):
    """Whatever still works ran the STE path."""
    _disable(monkeypatch, FWD_NAMES)


@pytest.fixture
def fwd_only(monkeypatch):
    """Whatever still works ran the forward-only path."""
    _disable(monkeypatch, STE_NAMES)


@pytest.mark.parametrize("per_channel, dan", [(False, None), (True, None), (False, "range"), (False, "std")])
@pytest.mark.parametrize("mode", MODES)
def test_quantizer_without_grad_uses_forward_only_path_with_same_output(mode, per_channel, dan, monkeypatch):
    q = _quantizer(mode, per_channel, dan)
    x = torch.randn(6, 3, 9, 11) * 2
    with monkeypatch.context() as m:
        _disable(m, FWD_NAMES)
        expected = q(x.clone().requires_grad_()).detach()
    with monkeypatch.context() as m:
        _disable(m, STE_NAMES)
        with torch.no_grad():
            assert q.forward_only(x)
            out = q(x)
        assert torch.equal(out, expected)


def test_frozen_bounds_and_plain_input_use_forward_only_path_with_grad_enabled(fwd_only):
    q = _quantizer("affine", False)
    q.requires_grad_(False)
    x = torch.randn(2, 3, 4, 4)
    assert torch.is_grad_enabled() and q.forward_only(x)
    assert not q(x).requires_grad


@pytest.mark.parametrize("mode", MODES)
def test_training_uses_ste_path_and_gets_gradients(mode, ste_only):
    q = _quantizer(mode, False)
    x = (torch.randn(2, 3, 8, 8) * 2).requires_grad_()
    assert not q.forward_only(x)
    q(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.parameters())


def test_bounds_needing_grad_use_ste_path_even_for_a_plain_input(ste_only):
    q = _quantizer("uniform", True)
    q(torch.randn(6, 4)).sum().backward()
    assert q.lower.grad is not None and q.upper.grad is not None


def test_tensor_bits_use_ste_path_without_grad(ste_only):
    q = _quantizer("affine", False)
    q.extra_bits = torch.tensor([0.0, 1.0])  # per-sample widths (AdaBM)
    with torch.no_grad():
        assert not q.forward_only(torch.randn(2, 3))
        q(torch.randn(2, 3, 4, 4))
        q.extra_bits = None
        q.enable_bit_offset()  # continuous offset (GBA)
        q(torch.randn(2, 3, 4, 4))


def test_input_of_another_dtype_uses_ste_path(ste_only):
    q = _quantizer("uniform", False)
    with torch.no_grad():
        assert q(torch.randn(2, 3, dtype=torch.float64)).dtype == torch.float64


# ---- layers: the cached quantized weight -----------------------------------------------------------------

def _conv(mode: str = "affine") -> QuantConv2d:
    torch.manual_seed(2)
    wq = Quantizer(4, mode=mode, channel_axis=0, num_channels=8)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 8, 3, padding=1), wq, Quantizer(4, mode="affine"))
    wq.set_bounds(layer.weight.detach().amin((1, 2, 3)), layer.weight.detach().amax((1, 2, 3)))
    layer.input_quantizer.set_bounds(torch.tensor(-1.0), torch.tensor(1.0))
    return layer


def _fresh(layer) -> torch.Tensor:
    """The quantized weight computed through autograd, never cached."""
    return layer.effective_weight().detach()


def _check_cached(layer) -> torch.Tensor:
    """The cached weight equals a fresh computation, and is reused while nothing changes."""
    with torch.no_grad():
        w = layer.effective_weight()
        assert layer.effective_weight() is w
    assert torch.equal(w, _fresh(layer))
    return w


@pytest.mark.parametrize("mode", MODES)
def test_cached_weight_is_reused_and_equals_the_autograd_one(mode):
    layer = _conv(mode)
    _check_cached(layer)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        out = layer(x)
    assert torch.equal(out, layer(x).detach())


def test_no_cache_while_gradients_are_wanted():
    layer = _conv()
    w1, w2 = layer.effective_weight(), layer.effective_weight()
    assert w1 is not w2 and w1.grad_fn is not None


@pytest.mark.parametrize("change", ["weight", "load_state_dict", "bounds", "lower_in_place", "project_bounds",
                                    "bits", "disable", "double"])
def test_cache_is_invalidated_by_changes(change):
    layer = _conv()
    old = _check_cached(layer)
    q = layer.weight_quantizer
    with torch.no_grad():
        if change == "weight":
            layer.weight.mul_(0.5)
        elif change == "load_state_dict":
            state = {k: v.clone() for k, v in layer.state_dict().items()}
            state["weight"] = -state["weight"]
            layer.load_state_dict(state)
        elif change == "bounds":
            q.set_bounds(q.lower * 0.5, q.upper * 0.5)
        elif change == "lower_in_place":
            q.lower[0] -= 1.0
        elif change == "project_bounds":
            q.lower.fill_(0.2)
            q.project_bounds_()
        elif change == "bits":
            q.set_bits(2)
        elif change == "disable":
            q.enabled = False
        else:
            layer.double()
    new = _check_cached(layer)
    assert not torch.equal(new, old) or new.dtype != old.dtype


def test_layers_with_a_weight_delta_are_not_cached():
    class InputDependentDelta(nn.Module):  # like SPR²Q's dynamic routing: state outside parameters
        def __init__(self) -> None:
            super().__init__()
            self.context = 0.0

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return torch.full_like(w, self.context)

    layer = _conv()
    old = _check_cached(layer)
    layer.weight_delta = InputDependentDelta()
    with torch.no_grad():
        assert torch.equal(layer.effective_weight(), old)
        layer.weight_delta.context = 0.3
        assert torch.equal(layer.effective_weight(), _fresh(layer))
        assert not torch.equal(layer.effective_weight(), old)
    layer.weight_delta = None
    assert torch.equal(_check_cached(layer), old)


def test_weight_calibration_is_not_skipped_by_the_cache():
    layer = _conv()
    _check_cached(layer)
    q = layer.weight_quantizer
    with torch.no_grad():
        layer.weight.mul_(3.0)
        q.start_calibration()
        assert torch.equal(layer.effective_weight(), layer.weight)  # observing: identity
        q.finish_calibration()
    torch.testing.assert_close(q.upper, layer.weight.detach().amax((1, 2, 3)).clamp(min=q.lower + 1e-8))
    _check_cached(layer)


def test_linear_layer_without_grad_matches_autograd():
    torch.manual_seed(3)
    wq = Quantizer(3, mode="symmetric", channel_axis=0, num_channels=5)
    layer = QuantLinear.from_float(nn.Linear(7, 5), wq, Quantizer(3, mode="uniform", dan="range", dan_axis=-1))
    wq.set_bounds(-layer.weight.detach().abs().amax(1), layer.weight.detach().abs().amax(1))
    layer.input_quantizer.set_bounds(torch.tensor(0.0), torch.tensor(1.0))
    x = torch.randn(4, 9, 7)
    with torch.no_grad():
        out = layer(x)
    assert torch.equal(out, layer(x).detach())
