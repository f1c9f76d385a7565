"""The fused RLQ / RBD activation quantizer against the same expression written with autograd."""

from __future__ import annotations

import pytest
import torch

from srq.quant.grids.rbd import level_thresholds, rbd_code, soft_levels
from srq.quant.grids.soft_step import soft_step_quant
from srq.quant.quantizer import Quantizer
from srq.quant.soft_rounding import TANH_TEMPERATURE, tanh_round


def _params(channels: int, dtype: torch.dtype, bits: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(3, max(channels, 1), 5, 7, generator=g, dtype=dtype) * 2).requires_grad_()
    step = torch.tensor(0.6, dtype=dtype, requires_grad=True)
    offset = torch.tensor(-1.1, dtype=dtype, requires_grad=True)
    shift = (torch.randn(max(channels, 1), generator=g, dtype=dtype) * 0.3).requires_grad_()
    # bit thresholds moved off their round-to-nearest values, inside the range RBD keeps them in
    t = (torch.tensor([2.0**j - 0.5 for j in range(bits)], dtype=dtype)
         + (torch.rand(bits, generator=g, dtype=dtype) - 0.5) * 0.8).requires_grad_()
    return x, step, offset, shift, t


def _view(shift: torch.Tensor, channels: int) -> torch.Tensor:
    return shift.reshape(1, -1, 1, 1) if channels else shift.reshape(())


def _grads(out: torch.Tensor, tensors: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=out.dtype)
    return list(torch.autograd.grad((out * w).sum(), tensors))


@pytest.mark.parametrize("channels", [0, 4])
@pytest.mark.parametrize("bits", [2, 4])
def test_rlq_values_and_gradients_match_the_autograd_expression(channels, bits):
    x, step, offset, shift, _ = _params(channels, torch.float64, bits, seed=bits + channels)
    qp, tau = 2**bits - 1, _view(shift, channels)
    fused = soft_step_quant(x, step, offset, tau, qp, TANH_TEMPERATURE)
    reference = tanh_round(torch.clamp((x - tau - offset) / step, 0, qp)) * step + offset + tau
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-12)
    for a, b in zip(_grads(fused, [x, step, offset, shift], 0), _grads(reference, [x, step, offset, shift], 0)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels", [0, 4])
@pytest.mark.parametrize("bits", [2, 3])
def test_rbd_values_and_gradients_match_the_autograd_expression(channels, bits):
    x, step, offset, shift, t = _params(channels, torch.float64, bits, seed=10 + bits + channels)
    qp, tau = 2**bits - 1, _view(shift, channels)
    fused = soft_step_quant(x, step, offset, tau, qp, TANH_TEMPERATURE, level_thresholds(t),
                            lambda u: rbd_code(u, t))
    u = torch.clamp((x - tau - offset) / step, 0, qp)
    y = soft_levels(u, t)
    reference = (rbd_code(u, t) + (y - y.detach())) * step + offset + tau
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-12)
    tensors = [x, step, offset, shift, t]
    got, want = _grads(fused, tensors, 1), _grads(reference, tensors, 1)
    for name, a, b in zip(("x", "step", "offset", "shift", "thresholds"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient in {name}")
    assert got[4].abs().sum() > 0  # the thresholds do learn


@pytest.mark.parametrize("layout", ["channels_last", "permuted"])
def test_rbd_gives_the_same_values_and_gradients_in_any_memory_layout(layout):
    x, step, offset, shift, t = _params(4, torch.float64, 2, seed=3)
    if layout == "channels_last":
        strided = x.detach().contiguous(memory_format=torch.channels_last)
    else:  # laid out (W, N, H, C): an order no memory-format helper names
        strided = x.detach().permute(3, 0, 2, 1).contiguous().permute(1, 3, 2, 0)
    strided.requires_grad_()
    assert strided.stride() != x.stride()

    def run(inp):
        out = soft_step_quant(inp, step, offset, _view(shift, 4), 3, TANH_TEMPERATURE, level_thresholds(t),
                              lambda u: rbd_code(u, t))
        return out, _grads(out, [inp, step, offset, shift, t], 2)

    (out_a, grads_a), (out_b, grads_b) = run(x), run(strided)
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_fused_quantizer_keeps_its_input_and_one_byte_codes_for_the_backward_pass():
    q = Quantizer(2, mode="rbd_act", observer="minmax", dan_channels=8, dan_axis=1, batch_axis=0)
    x = torch.randn(2, 8, 16, 16)
    q.start_calibration()
    q(x)
    q.finish_calibration()
    x.requires_grad_()
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        q(x).sum().backward()
    big = [t for t in saved if t.numel() > 64]  # besides these: parameters only
    assert [(t.numel(), t.dtype) for t in big] == [(x.numel(), x.dtype), (x.numel(), torch.uint8)]  # x, the codes
    assert x.grad is not None and q.thresholds.grad is not None and q.shift.grad is not None


def test_levels_and_code_go_together():
    x = torch.randn(4)
    with pytest.raises(ValueError, match="together"):
        soft_step_quant(x, torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), 3, 4.0, torch.zeros(3))


@pytest.mark.parametrize("mode", ["rlq", "rbd_act"])
def test_grids_give_the_same_training_signal_fused_or_composed(mode, monkeypatch):
    import srq.quant.grids.base as grids

    q = Quantizer(2, mode=mode, observer="minmax", dan_channels=4, dan_axis=1, batch_axis=0).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    q.start_calibration()
    q(x)
    q.finish_calibration()
    with torch.no_grad():
        q.shift.copy_(torch.linspace(-0.3, 0.3, 4))
    results = []
    for fused in (True, False):
        monkeypatch.setattr(grids, "FUSED", fused)
        xi = x.clone().requires_grad_()
        out = q(xi)
        params = [p for p in q.parameters() if p.requires_grad]
        results.append([out, *torch.autograd.grad((out * out.detach().sin()).sum(), [xi, *params])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["rlq", "rbd_act"])
def test_bfloat16_at_8_bits_runs_and_follows_the_composed_expression(mode, monkeypatch):
    """bfloat16 rounds codes near 255 (u + ½ = 255.5 becomes 256): the fused backward must stay in range."""
    import srq.quant.grids.base as grids

    q = Quantizer(8, mode=mode, observer="minmax", dan_channels=4, dan_axis=1, batch_axis=0)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4)) * 3
    q.start_calibration()
    q(x)
    q.finish_calibration()
    grads = []
    for fused in (True, False):
        monkeypatch.setattr(grids, "FUSED", fused)
        xi = x.bfloat16().requires_grad_()
        q.zero_grad()
        (q(xi).float() * x).sum().backward()
        grads.append((xi.grad.float(), q.step.grad.clone()))
    assert torch.isfinite(grads[0][0]).all()
    assert (grads[0][0] - grads[1][0]).abs().mean() < 0.02 * grads[1][0].abs().mean()
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0.05, atol=1e-3)
