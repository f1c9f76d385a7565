"""The QAT baselines' grids — LSQ, LSQ+, PAMS, DoReFa — against their papers' equations written out by hand,
and their life in a Quantizer: levels, the forward-only path, state dicts, rounding parts, QuantConfig/prepare."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from srq.errors import SrqError
from srq.quant import QuantConfig, Quantizer, calibrate, layer_costs, model_cost, prepare
from srq.quant.grids import GRIDS, DoReFaGrid, LSQGrid, LSQPlusGrid, LSQPlusIntGrid, PAMSGrid, SymmetricGrid
from srq.quant.grids import base as grid_base
from srq.quant.functional import fake_quant_step, round_ste
from srq.quant.rounding import ROUNDINGS, STE

QAT = ["lsq", "lsqplus", "pams", "dorefa"]
X = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.3


def _calibrated(mode: str, bits: int, *batches: torch.Tensor, axis: int | None = None, **kw) -> Quantizer:
    q = Quantizer(bits, mode=mode, channel_axis=axis, num_channels=batches[0].shape[0] if axis == 0 else 1, **kw)
    q.start_calibration()
    for x in batches:
        q(x)
    q.finish_calibration()
    return q


def _backward(fn, x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and the gradient of ``Σ upstream·fn(x)`` with respect to ``x``."""
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (y * upstream).sum().backward()
    return y.detach(), x.grad


def test_the_qat_grids_are_registered_by_name():
    assert {"lsq": LSQGrid, "lsqplus": LSQPlusGrid, "pams": PAMSGrid, "dorefa": DoReFaGrid}.items() <= GRIDS.items()
    assert [GRIDS[m].name for m in QAT] == QAT
    assert not any(GRIDS[m].variable_bits for m in QAT)
    with pytest.raises(ValueError, match="continuous bit offset"):
        Quantizer(4, mode="lsq").enable_bit_offset()
    q = _calibrated("lsq", 4, X)
    q.set_bits(1)  # a signed 1-bit LSQ grid would have Qp = 0 (and an infinite gradient scale)
    with pytest.raises(ValueError, match="at least 2 bits"):
        q(X)


# ---- LSQ ----------------------------------------------------------------------------------------------------------

def test_lsq_forward_and_step_gradient_are_the_papers_with_the_gradient_scale():
    v = torch.tensor([-3.0, -0.8, 0.1, 0.74, 1.2, 2.6])
    u = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, -2.0])  # upstream gradient
    s = torch.tensor(0.5, requires_grad=True)
    y, gv = _backward(lambda v: LSQGrid().quantize(v, {"step": s, "signed": torch.tensor(True)}, 3, STE()), v, u)
    # signed 3 bits: Qn = 4, Qp = 3; v/s = −6, −1.6, 0.2, 1.48, 2.4, 5.2 → clip, round → −4, −2, 0, 1, 2, 3
    assert y.tolist() == [-2.0, -1.0, 0.0, 0.5, 1.0, 1.5]
    assert gv.tolist() == [0.0, 2.0, -1.0, 0.5, 3.0, 0.0]  # STE inside, 0 where clipped
    # ∂v̂/∂s: −Qn below, −v/s + round(v/s) inside, Qp above; times g = 1/√(N·Qp), N = 6
    d = [-4.0, 1.6 - 2.0, -0.2 + 0.0, -1.48 + 1.0, -2.4 + 2.0, 3.0]
    expected = sum(a * b for a, b in zip(u.tolist(), d)) / math.sqrt(6 * 3)
    assert s.grad.item() == pytest.approx(expected, rel=1e-5)


def test_lsq_unsigned_and_per_channel_steps_follow_the_element_wise_formula():
    v = torch.tensor([[0.0, 0.3, 1.1, 2.0, 9.0], [-0.7, -0.2, 0.45, 0.1, 3.3]])
    u = torch.tensor([[1.0, -2.0, 0.5, 1.5, 2.0], [0.3, 1.0, -1.0, 2.0, 0.5]])
    step = torch.tensor([0.25, 0.2], requires_grad=True)
    signed = torch.tensor([False, True])
    p = {"step": step.view(2, 1), "signed": signed.view(2, 1)}
    y, gv = _backward(lambda v: LSQGrid().quantize(v, p, 3, STE()), v, u)
    qn, qp = torch.tensor([[0.0], [4.0]]), torch.tensor([[7.0], [3.0]])  # unsigned 0…7, signed −4…3
    z = v / step.detach().view(2, 1)
    inside = (z >= -qn) & (z <= qp)
    assert torch.equal(y, torch.round(z.clamp(-qn, qp)) * step.detach().view(2, 1))
    assert y[0].tolist() == [0.0, 0.25, 1.0, 1.75, 1.75]
    assert torch.equal(gv, u * inside)
    d = torch.where(z < -qn, -qn, torch.where(z > qp, qp, -z + torch.round(z)))
    g = 1 / torch.sqrt(5 * qp.flatten())  # N = 5 elements per channel
    torch.testing.assert_close(step.grad, g * (u * d).sum(1))


def test_lsq_init_is_twice_the_mean_abs_over_sqrt_qp_signed_where_the_data_went_negative():
    x = torch.tensor([[-1.0, 3.0, 0.5, 0.5], [0.0, 2.0, 1.0, 1.0]])  # channel 0 goes negative, channel 1 not
    q = _calibrated("lsq", 4, x, axis=0)
    assert q.observer_name == "signed_meanabs" and q.signed.tolist() == [True, False]
    torch.testing.assert_close(q.step.data, torch.tensor([2 * 1.25 / math.sqrt(7), 2 * 1.0 / math.sqrt(15)]))
    q = _calibrated("lsq", 4, x[:, :2], x[:, 2:])  # two batches, per tensor: the mean over both
    assert q.signed.item() and q.step.item() == pytest.approx(2 * 9.0 / 8 / math.sqrt(7))
    relu = _calibrated("lsq", 4, x.clamp_min(0))
    assert not relu.signed.item() and relu.step.item() == pytest.approx(2 * 8.0 / 8 / math.sqrt(15))
    lo, hi = relu.bounds()
    assert lo.item() == 0.0 and hi.item() == pytest.approx(15 * relu.step.item())
    assert [t.item() for t in q.bounds()] == pytest.approx([-8 * q.step.item(), 7 * q.step.item()])
    fresh = Quantizer(4, mode="lsq")  # initialised signed: the unsigned choice must come from the state dict
    fresh.load_state_dict(relu.state_dict())
    assert not fresh.signed.item() and torch.equal(fresh(x), relu(x))


def test_lsq_range_init_covers_the_observers_range_and_keeps_lsqs_forward():
    x = torch.tensor([[-1.0, 3.0, 0.5, 0.5], [0.0, 2.0, 1.0, 1.0]])  # channel 0 goes negative, channel 1 not
    q = _calibrated("lsq_range", 4, x, axis=0, observer="minmax")
    assert q.observer_name == "minmax" and q.signed.tolist() == [True, False]
    # s = max(upper/Qp, −lower/Qn): channel 0 max(3/7, 1/8), channel 1 (unsigned, 0 … 15) 2/15
    torch.testing.assert_close(q.step.data, torch.tensor([3 / 7, 2 / 15]))
    lo, hi = q.bounds()
    assert hi.tolist() == pytest.approx([3.0, 2.0]) and lo.tolist() == pytest.approx([-8 * 3 / 7, 0.0])
    deep = _calibrated("lsq_range", 4, torch.tensor([-5.0, 1.0]), observer="minmax")  # the negative side decides
    assert deep.step.item() == pytest.approx(5 / 8)
    same = Quantizer(4, mode="lsq", channel_axis=0, num_channels=2)
    same.load_state_dict(q.state_dict())
    assert torch.equal(same(x), q(x))  # the grid and forward pass are LSQ's


def test_lsq_3sigma_weight_init_is_lsq_plus_papers_mu_plus_minus_3_sigma_over_half_the_levels():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3) * torch.linspace(0.05, 1.0, 6).view(6, 1, 1, 1) + 0.2
    q = _calibrated("lsq_3sigma", 4, w, axis=0)
    flat = w.reshape(6, -1).double()
    mu, sd = flat.mean(1), flat.std(1, unbiased=False)
    expected = torch.maximum((mu - 3 * sd).abs(), (mu + 3 * sd).abs()) / 8  # 2^(b-1), b = 4
    assert q.observer_name == "mean_3std" and q.signed.all()
    torch.testing.assert_close(q.step.data.double().flatten(), expected, rtol=1e-6, atol=0)
    lsq = _calibrated("lsq", 4, w, axis=0)
    lsq.step.data.copy_(q.step.data)  # same grid and gradient scale once the steps agree
    torch.testing.assert_close(q(w), lsq(w))
    halves = _calibrated("lsq_3sigma", 4, w[:, :, :1], w[:, :, 1:], axis=0)  # statistics accumulate over batches
    torch.testing.assert_close(halves.step.data, q.step.data)


# ---- LSQ+ ---------------------------------------------------------------------------------------------------------

def test_lsqplus_forward_and_step_and_offset_gradients():
    v = torch.tensor([-2.0, -0.9, -0.2, 0.2, 3.0])
    u = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    s, beta = torch.tensor(0.5, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    y, gv = _backward(lambda v: LSQPlusGrid().quantize(v, {"step": s, "offset": beta}, 2, STE()), v, u)
    # (v − β)/s = −2, 0.2, 1.6, 2.4, 8 → clip to 0…3, round → 0, 0, 2, 2, 3
    assert y.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.5]
    assert gv.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0]
    g = 1 / math.sqrt(5 * 3)
    # ∂v̂/∂s: 0 (= the lower integer) below, −z + round(z) inside, 3 above
    assert s.grad.item() == pytest.approx(g * (2 * -0.2 + 3 * 0.4 + 4 * -0.4 + 5 * 3), rel=1e-5)
    # ∂v̂/∂β: 1 where clipped, 1 − s·(1/s) = 0 inside (STE)
    assert beta.grad.item() == pytest.approx(g * (1 + 5))


def test_lsqplus_min_max_init_puts_the_extremes_on_the_end_levels():
    x = torch.tensor([[-0.6, 0.3, 2.4, 1.0], [0.5, 0.9, 0.7, 1.1]])
    q = _calibrated("lsqplus", 2, x)
    assert q.step.item() == pytest.approx(1.0) and q.offset.item() == pytest.approx(-0.6)
    per_channel = _calibrated("lsqplus", 2, x, axis=0)
    torch.testing.assert_close(per_channel.step.data, torch.tensor([1.0, 0.2]))
    torch.testing.assert_close(per_channel.offset.data, torch.tensor([-0.6, 0.5]))
    y = per_channel(x)
    torch.testing.assert_close(y.amin(1), x.amin(1)) and torch.testing.assert_close(y.amax(1), x.amax(1))



def test_lsqplus_int_snaps_the_offset_to_the_grid_and_keeps_lsqplus_gradients():
    """Levels ``(r + k)·s`` with r = round(β/s): the grid holds 0 exactly (an integer zero point −r); by the STE on
    r the gradients are LSQ+'s, except ∂/∂s outside the range, which is q − β/s (LSQ+'s 0 or 2ᵇ − 1 plus the
    snap's residue)."""
    v = torch.tensor([-2.0, -0.9, -0.2, 0.2, 3.0])
    u = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    s, beta = torch.tensor(0.5, requires_grad=True), torch.tensor(-1.1, requires_grad=True)
    y, gv = _backward(lambda v: LSQPlusIntGrid().quantize(v, {"step": s, "offset": beta}, 2, STE()), v, u)
    # r = round(−2.2) = −2; v/s = −4, −1.8, −0.4, 0.4, 6 → clip to −2…1, round → −2, −2, 0, 0, 1
    assert y.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.5]
    assert gv.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0]
    g = 1 / math.sqrt(5 * 3)
    # ∂/∂s: q − β/s outside (−2 + 2.2 below, 1 + 2.2 above), round(v) − v inside (−0.2, 0.4, −0.4)
    assert s.grad.item() == pytest.approx(g * (1 * 0.2 + 2 * -0.2 + 3 * 0.4 + 4 * -0.4 + 5 * 3.2), rel=1e-5)
    assert beta.grad.item() == pytest.approx(g * (1 + 5))
    bounds = LSQPlusIntGrid().bounds({"step": s.detach(), "offset": beta.detach()}, 2)
    assert [b.item() for b in bounds] == [-1.0, 0.5]


@pytest.mark.parametrize("offset", [-0.61, 0.3, -3.0])
def test_lsqplus_int_fused_node_equals_the_composed_expression(offset, monkeypatch):
    torch.manual_seed(0)
    x0 = torch.cat([torch.randn(4000) * 2, torch.tensor([-0.75, 1.5, 0.125, -1.625])])  # ties
    u = torch.randn_like(x0)
    outs = []
    for fused in (True, False):
        monkeypatch.setattr(grid_base, "FUSED", fused)
        x = x0.clone().requires_grad_(True)
        s, beta = torch.tensor(0.25, requires_grad=True), torch.tensor(offset, requires_grad=True)
        y = LSQPlusIntGrid().quantize(x, {"step": s, "offset": beta}, 4, round_ste)
        (y * u).sum().backward()
        outs.append((y.detach(), x.grad, s.grad, beta.grad))
    (y1, gx1, gs1, gb1), (y2, gx2, gs2, gb2) = outs
    assert torch.equal(y1, y2)
    torch.testing.assert_close(gx1, gx2, rtol=0, atol=1e-6)  # (x/s)·s: one rounding of the composed form
    assert gs1.item() == pytest.approx(gs2.item(), rel=1e-4, abs=1e-4)
    assert gb1.item() == pytest.approx(gb2.item(), rel=1e-4, abs=1e-4)
    levels = torch.unique(y1 / 0.25)
    assert torch.equal(levels, levels.round()) and levels.numel() <= 16


def test_lsqplus_int_init_snaps_the_min_max_offset():
    x = torch.tensor([[-0.6, 0.3, 2.4, 1.0]])
    q = _calibrated("lsqplus_int", 2, x)
    assert q.step.item() == pytest.approx(1.0) and q.offset.item() == pytest.approx(-1.0)


# ---- PAMS ---------------------------------------------------------------------------------------------------------

def _pams_official(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """PAMS's activation quantizer as its authors wrote it: clamp to ±α, scale, STE round, scale back."""
    qmax = 2.0 ** (bits - 1) - 1
    act = torch.max(torch.min(x, alpha), -alpha) * qmax / alpha
    return (act + (torch.round(act) - act).detach()) * alpha / qmax


@pytest.mark.parametrize("offset", [None, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_step_quantizer_has_the_values_and_gradients_of_the_composed_expression(offset, dtype):
    torch.manual_seed(0)
    x0 = torch.cat([torch.randn(4000) * 2, torch.tensor([-2.0, 1.5, 0.25, -1.75])])  # ties at lo/hi and at .5
    u = torch.randn_like(x0)
    outs = []
    for fused in (True, False):
        x = x0.clone().to(dtype).requires_grad_(True)
        s = torch.tensor(0.25, requires_grad=True)
        beta = None if offset is None else torch.tensor(offset, requires_grad=True)
        if fused:
            y = fake_quant_step(x, s, -4, 3, offset=beta)
        else:
            v = (x if beta is None else x - beta) / s
            y = round_ste(torch.clamp(v, -4.0, 3.0)) * s
            y = y if beta is None else y + beta
        (y.float() * u).sum().backward()
        outs.append((y.detach(), x.grad, s.grad, None if beta is None else beta.grad))
    (y1, gx1, gs1, gb1), (y2, gx2, gs2, gb2) = outs
    assert y1.dtype == dtype and torch.equal(y1, y2) and torch.equal(gx1, gx2)
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # the fused sums accumulate in float32
    assert gs1.item() == pytest.approx(gs2.item(), rel=tol, abs=tol)
    if gb1 is not None:
        assert gb1.item() == pytest.approx(gb2.item(), rel=tol, abs=tol)


def test_pams_max_scale_and_its_gradient():
    v = torch.tensor([0.7, -0.2, 2.0, -9.0, 1.0, 0.4])
    u = torch.tensor([1.0, -1.0, 2.0, 0.5, 3.0, 1.5])
    grads = []
    for quantize in (lambda v, a: PAMSGrid().quantize(v, {"alpha": a}, 3, STE()), lambda v, a: _pams_official(v, a, 3)):
        alpha = torch.tensor(1.5, requires_grad=True)
        y, gv = _backward(lambda v: quantize(v, alpha), v, u)
        grads.append(alpha.grad.item())
        # k = 3 steps of α/k = 0.5: clip(v)·2 = 1.4, −0.4, 3, −3, 2, 0.8 → round → 1, 0, 3, −3, 2, 1
        assert y.tolist() == [0.5, 0.0, 1.5, -1.5, 1.0, 0.5]
        assert gv.tolist() == [1.0, -1.0, 0.0, 0.0, 3.0, 1.5]
    # ∂q/∂α: sign(x) where |x| > α; (q − x)/α inside (d/dα of round(x·k/α)·α/k with the STE)
    inside = (torch.tensor([0.5, 0.0, 1.0, 0.5]) - torch.tensor([0.7, -0.2, 1.0, 0.4])) / 1.5
    expected = (u[[0, 1, 4, 5]] * inside).sum().item() + 2.0 * 1 + 0.5 * -1
    assert grads == pytest.approx([expected, expected], rel=1e-6)


def test_pams_init_is_the_mean_per_sample_max_abs_and_weights_reuse_the_symmetric_grid():
    a = torch.zeros(2, 2, 2, 2)
    a[0, 1, 0, 0], a[1, 0, 1, 1] = 1.0, -2.0
    b = torch.zeros(1, 2, 2, 2)
    b[0, 0, 0, 1] = 6.0
    q = _calibrated("pams", 4, a, b)  # sample maxima 1, 2, 6
    assert q.observer_name == "sample_maxabs" and q.alpha.item() == pytest.approx(3.0)
    assert isinstance(q.grid, SymmetricGrid) and q.alpha.requires_grad
    w = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    wq = _calibrated("pams", 4, w, axis=0)
    torch.testing.assert_close(wq.alpha.data, w.abs().amax((1, 2, 3)))
    sym = _calibrated("symmetric", 4, w, axis=0)  # PAMS's weights: round(w·k/max|w|)·max|w|/k
    m = w.abs().amax((1, 2, 3), keepdim=True)
    torch.testing.assert_close(sym(w), torch.round(w * 7 / m) * m / 7)
    torch.testing.assert_close(sym.alpha.data, wq.alpha.data)


# ---- DoReFa -------------------------------------------------------------------------------------------------------

def _dorefa_reference(w: torch.Tensor, bits: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Eq. 9 of DoReFa-Net with max |tanh| over ``dims``, times max |w| over ``dims``."""
    n = 2**bits - 1
    t = torch.tanh(w)
    r = t / (2 * t.abs().amax(dims, keepdim=True)) + 0.5
    return (2 * torch.round(n * r) / n - 1) * w.abs().amax(dims, keepdim=True)


def test_dorefa_values_and_straight_through_gradient():
    w = torch.tensor([0.3, -0.05, 0.12, -0.8, 0.5, -0.2])
    u = torch.tensor([1.0, -2.0, 0.5, 1.5, 3.0, -1.0])
    scale = torch.tensor(0.8)
    y, gw = _backward(lambda w: DoReFaGrid().quantize(w, {"scale": scale}, 2, STE()), w, u)
    assert torch.equal(y, _dorefa_reference(w, 2, (0,)))
    # 2 bits: tanh(w)/(2·tanh 0.8) + ½ = .719, .462, .590, 0, .876, .353 → round(3r) = 2, 1, 2, 0, 3, 1
    torch.testing.assert_close(y, torch.tensor([1, -1, 1, -3, 3, -1]) / 3 * 0.8)
    # STE: ∂/∂w_i = scale·(1 − t_i²)/M, and the max |tanh| (here w_3) also carries −sign·scale·Σ u_j t_j / M²
    t = torch.tanh(w)
    m = t.abs().max()
    expected = 0.8 * u * (1 - t**2) / m
    expected[3] += 0.8 * (1 - t[3] ** 2) * torch.sign(t[3]) * -(u * t).sum() / m**2
    torch.testing.assert_close(gw, expected)


def test_dorefa_scale_is_a_calibrated_buffer_and_one_bit_is_sign_times_mean_abs():
    w = torch.randn(3, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * 0.05
    q = _calibrated("dorefa", 3, w, axis=0)
    assert list(q.parameters()) == [] and list(q.state_dict()) == ["scale", "initialized"]
    torch.testing.assert_close(q.scale, w.abs().amax((1, 2, 3)))
    assert torch.equal(q(w), _dorefa_reference(w, 3, (1, 2, 3)))
    eight = _calibrated("dorefa", 8, w, axis=0)  # a pretrained layer keeps its weights' magnitude
    assert (eight(w) - w).abs().max() < 0.01 * w.abs().max()
    one = _calibrated("dorefa", 1, w, axis=0)
    assert one.mode == "binary"
    torch.testing.assert_close(one(w), torch.where(w >= 0, 1.0, -1.0) * w.abs().mean((1, 2, 3), keepdim=True))


# ---- every QAT grid in a Quantizer ----------------------------------------------------------------------------------

def _integer_coordinates(q: Quantizer, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y`` in grid units, and the least and greatest integer the grid claims (broadcast like ``y``)."""
    b = q.bits
    p = {n: q._broadcast(getattr(q, n), y) for n in q.grid.params}
    if q.mode == "lsq":
        half = 2 ** (b - 1)
        lo = torch.where(p["signed"], -half, 0).float()
        return y / p["step"], lo, torch.where(p["signed"], half - 1, 2 * half - 1).float()
    if q.mode == "lsqplus":
        return (y - p["offset"]) / p["step"], torch.tensor(0.0), torch.tensor(2.0**b - 1)
    if q.mode == "pams":
        k = 2.0 ** (b - 1) - 1
        return y * k / p["alpha"], torch.tensor(-k), torch.tensor(k)
    return (y / p["scale"] + 1) * (2**b - 1) / 2, torch.tensor(0.0), torch.tensor(2.0**b - 1)


@pytest.mark.parametrize("mode", QAT)
@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("bits", range(2, 9))
def test_levels_fast_path_gradients_and_state_dict(mode, axis, bits):
    q = _calibrated(mode, bits, X, axis=axis)
    with torch.no_grad():
        assert q.forward_only(X)
        fast = q(X)
    xg = X.clone().requires_grad_(True)
    y = q(xg)
    assert torch.equal(fast, y.detach())  # quantize_fwd gives quantize's values
    k, lo, hi = _integer_coordinates(q, fast)
    assert (k - k.round()).abs().max() < 1e-3
    assert (k.round() >= lo - 0.5).all() and (k.round() <= hi + 0.5).all()
    for channel in fast if axis == 0 else fast[None]:
        assert min(bits + 1, 5) <= channel.unique().numel() <= 2**bits  # several levels used, no more than claimed
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    assert xg.grad.isfinite().all() and xg.grad.abs().sum() > 0
    for name, p in q.named_parameters():  # (LSQ+'s offset: only clipped values, none on the calibration data)
        assert p.grad is not None and p.grad.isfinite().all() and ((p.grad != 0).any() or name == "offset"), name
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)
    buffer.seek(0)
    fresh = Quantizer(bits, mode=mode, channel_axis=axis, num_channels=X.shape[0] if axis == 0 else 1)
    fresh.load_state_dict(torch.load(buffer))
    assert bool(fresh.initialized) and torch.equal(fresh(X), fast)


@pytest.mark.parametrize("mode", QAT)
def test_the_rounding_part_reaches_every_qat_grid(mode, monkeypatch):
    class Floor(STE):
        def __call__(self, z):
            return z + (torch.floor(z) - z).detach()

    monkeypatch.setitem(ROUNDINGS, "floor", Floor)
    q = _calibrated(mode, 4, X)
    floor = Quantizer(4, mode=mode, rounding="floor")
    floor.load_state_dict(q.state_dict())
    x = X.clone().requires_grad_(True)  # the autograd path (the forward-only one always rounds to nearest)
    nearest, down = q(x).detach(), floor(x).detach()
    assert (down <= nearest + 1e-6).all() and (down < nearest - 1e-6).any()
    k, _, _ = _integer_coordinates(floor, down)
    assert (k - k.round()).abs().max() < 1e-3


# ---- QuantConfig / prepare -------------------------------------------------------------------------------------------

def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(8, 3, 3, padding=1))


@pytest.mark.parametrize("w_mode, a_mode, w_observer, a_observer", [
    ("lsq", "lsq", "omse", "dbdc"),  # the grid's own observer replaces the one asked for, and its arguments
    ("lsqplus", "lsqplus", "minmax", "percentile"),
    ("symmetric", "pams", "minmax", "minmax"),  # PAMS: symmetric max |w| weights, learned activation scale
    ("dorefa", "lsq", "minmax", "ema_minmax"),
    ("pams", "lsqplus", "minmax", "omse"),
    ("lsq_3sigma", "lsqplus", "minmax", "omse"),  # LSQ+ as the method sets it up
])
def test_qat_modes_through_quant_config_prepare_and_calibrate(w_mode, a_mode, w_observer, a_observer):
    cfg = QuantConfig(w_bits=4, a_bits=4, w_mode=w_mode, a_mode=a_mode, w_observer=w_observer, a_observer=a_observer)
    model = calibrate(prepare(_model(), cfg), [torch.rand(2, 3, 8, 8)], progress=False)
    body = model[2]
    assert (body.weight_quantizer.mode, body.input_quantizer.mode) == (w_mode, a_mode)
    assert body.weight_quantizer.bits == 4 and model[0].weight_quantizer.bits == 8
    if a_mode == "lsq":  # after a ReLU: unsigned; after a LeakyReLU: signed
        assert not body.input_quantizer.signed.item() and model[4].input_quantizer.signed.item()
    x = torch.rand(1, 3, 8, 8) * 2  # beyond the calibrated range: LSQ+'s offset gets gradient where values clip
    model(x).square().mean().backward()
    for q in (body.weight_quantizer, body.input_quantizer):
        for name, p in q.named_parameters():  # (LSQ+'s offset: where values clip, none among the weights)
            exempt = q is body.weight_quantizer and name == "offset"
            assert p.grad is not None and ((p.grad != 0).any() or exempt), (q.mode, name)
    twin = calibrate(prepare(_model(), cfg), [torch.rand(2, 3, 8, 8) * 3], progress=False)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))


def test_quant_config_names_the_qat_modes_and_keeps_dorefa_to_weights():
    for mode in QAT:
        assert QuantConfig(w_mode=mode).w_mode == mode
    for mode in ("lsq", "lsqplus", "pams"):
        assert QuantConfig.from_json(QuantConfig(a_mode=mode).to_json()).a_mode == mode
    with pytest.raises(SrqError, match="a_mode must be one of .*pams"):
        QuantConfig(a_mode="dorefa")


def test_dorefas_scale_counts_in_the_model_size_like_a_symmetric_alpha():
    def costs(w_mode):
        model = prepare(_model(), QuantConfig(w_mode=w_mode, a_mode="symmetric"))
        return model_cost(model, input_size=(8, 8)), {c.name: c for c in layer_costs(model, input_size=(8, 8))}

    (dorefa, layers), (symmetric, sym_layers) = costs("dorefa"), costs("symmetric")
    assert dorefa.quantizer_params == symmetric.quantizer_params == 8 + 8 + 3 + 3  # weight scales + input α
    assert dorefa.size_bits == symmetric.size_bits and dorefa.float_params == symmetric.float_params
    assert layers["2"].quantizer_params == sym_layers["2"].quantizer_params == 8 + 1


@pytest.mark.parametrize("mode", ["lsq", "lsqplus"])
def test_activation_grad_scale_counts_one_samples_elements(mode):
    """LSQ's N is the features of one sample: a batch of two copies of a sample gives twice the one-sample step
    gradient (so the gradient does not depend on the batch size, and DDP ranks with half a batch agree)."""
    x = X[:1]
    q = _calibrated(mode, 4, x, batch_axis=0)
    grads = []
    for batch in (x, torch.cat([x, x])):
        q.zero_grad()
        q(batch).sum().backward()
        grads.append(q.step.grad.clone())
    torch.testing.assert_close(grads[1], 2 * grads[0])
    w = _calibrated(mode, 4, x)  # no batch axis (a weight quantizer): N is the whole tensor, twice as many
    w(torch.cat([x, x])).sum().backward()
    torch.testing.assert_close(w.step.grad, 2 * grads[0] / math.sqrt(2))
