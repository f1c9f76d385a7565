"""Fake-quantization math of ``srq.quant.functional`` against hand values and independent numpy references.

The bound gradients are checked against the closed form of SPR²Q Eq. 8, written out here in numpy:

    ∂W_q/∂v = ∂Ŵ/∂v + σ·round((Ŵ − a)/s)/(2ⁿ − 1) − σ·(Ŵ − a)/(b − a),   σ = −1 for v = a, +1 for v = b,
    ∂Ŵ/∂a = 1 where W < a,  ∂Ŵ/∂b = 1 where W > b.

The bit-width gradient (needed by GBA) is checked against the derivative of the continuous relaxation of the
quantization error (uniform rounding noise, MSE = s²/12) and for the sign the GBA supplement (Eq. S3) predicts.
Everything that compares with numpy runs in float64 so both sides round the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srq.quant.functional import binarize, clip_bounds, fake_quant, fake_quant_symmetric, num_levels, round_ste

T = torch.tensor


# ---- fake_quant: levels, clipping, rounding ------------------------------------------------------------

def test_fake_quant_hand_values_2bit():
    # lower 0, upper 1, 2 bits: s = 1/3, grid {0, 1/3, 2/3, 1}
    x = T([-1.0, 0.1, 0.26, 0.49, 0.51, 0.9, 2.0])
    # clip:          0    0.1   0.26  0.49  0.51  0.9   1
    # (x̂ − 0)/s:     0    0.3   0.78  1.47  1.53  2.7   3
    # round:         0    0     1     1     2     3     3
    expected = T([0.0, 0.0, 1 / 3, 1 / 3, 2 / 3, 1.0, 1.0])
    out = fake_quant(x, T(0.0), T(1.0), 2)
    torch.testing.assert_close(out, expected)


def test_fake_quant_hand_values_shifted_range_3bit():
    # lower −1, upper 0.4, 3 bits: s = 1.4/7 = 0.2, grid −1, −0.8, …, 0.4
    x = T([-3.0, -0.95, -0.69, -0.05, 0.05, 0.31, 0.5])
    # clip:          −1    −0.95  −0.69  −0.05  0.05  0.31  0.4
    # (x̂ + 1)/0.2:    0     0.25   1.55   4.75   5.25  6.55  7
    # round:          0     0      2      5      5     7     7
    expected = T([-1.0, -1.0, -0.6, 0.0, 0.0, 0.4, 0.4])
    torch.testing.assert_close(fake_quant(x, T(-1.0), T(0.4), 3), expected)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_fake_quant_output_on_grid_with_2n_levels(bits):
    torch.manual_seed(0)
    x = torch.randn(10000, dtype=torch.float64) * 2
    a, b = T(-1.5, dtype=torch.float64), T(2.5, dtype=torch.float64)
    q = fake_quant(x, a, b, bits)
    k = (q - a) / ((b - a) / (2**bits - 1))
    assert torch.allclose(k, k.round(), atol=1e-9)
    levels = torch.unique(k.round())
    assert levels.min() == 0 and levels.max() == 2**bits - 1
    assert len(levels) == 2**bits  # every level is reached by this much data
    assert q.min() >= a and q.max() <= b
    # nearest level inside the range: error at most s/2
    inside = (x >= a) & (x <= b)
    assert ((q - x)[inside].abs() <= (b - a) / (2**bits - 1) / 2 + 1e-12).all()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_grid_values_are_fixed_points(bits):
    a, b = T(-0.3, dtype=torch.float64), T(1.7, dtype=torch.float64)
    grid = a + torch.arange(2**bits, dtype=torch.float64) * (b - a) / (2**bits - 1)
    torch.testing.assert_close(fake_quant(grid, a, b, bits), grid)
    # quantizing twice changes nothing
    x = torch.linspace(-1, 2, 301, dtype=torch.float64)
    q = fake_quant(x, a, b, bits)
    torch.testing.assert_close(fake_quant(q, a, b, bits), q)


def test_per_channel_bounds_broadcast_like_per_tensor_calls():
    torch.manual_seed(1)
    x = torch.randn(3, 4, 5, 5)
    lower = T([-1.0, -0.5, 0.0]).reshape(3, 1, 1, 1)
    upper = T([1.0, 0.25, 2.0]).reshape(3, 1, 1, 1)
    out = fake_quant(x, lower, upper, 3)
    for c in range(3):
        torch.testing.assert_close(out[c], fake_quant(x[c], lower[c, 0, 0, 0], upper[c, 0, 0, 0], 3))
    # per-tensor bounds give one grid for every channel
    out_t = fake_quant(x, T(-1.0), T(1.0), 3)
    torch.testing.assert_close(out_t[1], fake_quant(x[1], T(-1.0), T(1.0), 3))
    assert not torch.equal(out_t, out)


def test_num_levels_and_round_ste():
    assert num_levels(1) == 1 and num_levels(4) == 15 and num_levels(8) == 255
    torch.testing.assert_close(num_levels(T(3.0)), T(7.0))
    x = T([0.2, 1.7, -2.6], requires_grad=True)
    y = round_ste(x)
    torch.testing.assert_close(y, T([0.0, 2.0, -3.0]))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(3))


def test_clip_bounds_values():
    x = T([-2.0, -1.0, 0.0, 1.0, 2.0])
    torch.testing.assert_close(clip_bounds(x, T(-1.0), T(1.0)), T([-1.0, -1.0, 0.0, 1.0, 1.0]))


# ---- STE gradients ---------------------------------------------------------------------------------------

def test_ste_gradient_wrt_x_is_one_inside_zero_outside():
    x = T([-2.0, -1.0, -0.3, 0.0, 0.49, 1.0, 1.01, 5.0], requires_grad=True)
    fake_quant(x, T(-1.0), T(1.0), 3).sum().backward()
    # bounds inclusive: x = −1 and x = 1 pass the gradient
    torch.testing.assert_close(x.grad, T([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]))


def _eq8_reference(w: np.ndarray, a: np.ndarray, b: np.ndarray, bits: int, g: np.ndarray):
    """dL/da, dL/db from SPR²Q Eq. 8 with upstream gradient g = dL/dW_q (numpy, float64).

    ``a``/``b`` broadcast against ``w``; the result has the shape of ``a`` (sum over the elements sharing it).
    """
    n = 2**bits - 1
    w_hat = np.clip(w, a, b)
    s = (b - a) / n
    r = np.round((w_hat - a) / s)  # numpy rounds half to even like torch
    frac = (w_hat - a) / (b - a)
    d_hat_da = (w < a).astype(np.float64)
    d_hat_db = (w > b).astype(np.float64)
    dq_da = d_hat_da + (-1) * r / n - (-1) * frac
    dq_db = d_hat_db + (+1) * r / n - (+1) * frac
    axes = tuple(i for i in range(w.ndim) if np.shape(a)[i] == 1) if np.ndim(a) else None
    ga = (g * dq_da).sum(axis=axes, keepdims=np.ndim(a) > 0)
    gb = (g * dq_db).sum(axis=axes, keepdims=np.ndim(a) > 0)
    return ga, gb


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_bound_gradients_match_spr2q_eq8(bits, per_channel):
    rng = np.random.default_rng(bits + 10 * per_channel)
    w = rng.normal(size=(6, 4, 3, 3))
    g = rng.normal(size=w.shape)  # arbitrary upstream gradient dL/dW_q
    if per_channel:
        a = -np.abs(rng.normal(size=(6, 1, 1, 1))) * 1.2 - 0.1  # some channels clip, some barely
        b = np.abs(rng.normal(size=(6, 1, 1, 1))) * 1.2 + 0.1
    else:
        a, b = np.array(-0.8), np.array(1.1)
    wt = torch.from_numpy(w)
    at = torch.from_numpy(np.array(a)).requires_grad_(True)
    bt = torch.from_numpy(np.array(b)).requires_grad_(True)
    q = fake_quant(wt, at, bt, bits)
    (q * torch.from_numpy(g)).sum().backward()
    ga, gb = _eq8_reference(w, a, b, bits, g)
    np.testing.assert_allclose(at.grad.numpy(), ga, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(bt.grad.numpy(), gb, rtol=1e-9, atol=1e-9)
    # clipping happens on both sides for this data, so ∂Ŵ/∂v contributes
    assert (w < a).any() and (w > b).any()


def test_bound_gradients_elementwise_eq8_including_ties_at_bounds():
    # one element per case: below a, exactly a, inside, exactly b, above b
    a, b, bits = -1.0, 2.0, 2  # s = 1
    w = np.array([-3.0, -1.0, 0.7, 2.0, 4.0])
    for i in range(len(w)):
        g = np.zeros_like(w)
        g[i] = 1.0
        at, bt = T(a, dtype=torch.float64, requires_grad=True), T(b, dtype=torch.float64, requires_grad=True)
        (fake_quant(torch.from_numpy(w), at, bt, bits) * torch.from_numpy(g)).sum().backward()
        ga, gb = _eq8_reference(w, np.array(a), np.array(b), bits, g)
        assert at.grad.item() == pytest.approx(float(ga), abs=1e-12)
        assert bt.grad.item() == pytest.approx(float(gb), abs=1e-12)
    # by hand for w = 0.7: z = 1.7, round 2, frac 1.7/3: da = −2/3 + 1.7/3 = −0.1, db = 2/3 − 1.7/3 = 0.1
    at, bt = T(a, dtype=torch.float64, requires_grad=True), T(b, dtype=torch.float64, requires_grad=True)
    fake_quant(T([0.7], dtype=torch.float64), at, bt, bits).sum().backward()
    assert at.grad.item() == pytest.approx(-0.1) and bt.grad.item() == pytest.approx(0.1)
    # below a the output is a: dW_q/da = 1, dW_q/db = 0; above b the output is b: da = 0, db = 1
    at, bt = T(a, dtype=torch.float64, requires_grad=True), T(b, dtype=torch.float64, requires_grad=True)
    fake_quant(T([-3.0], dtype=torch.float64), at, bt, bits).sum().backward()
    assert at.grad.item() == pytest.approx(1.0) and bt.grad.item() == pytest.approx(0.0)


# ---- gradient wrt the bit width (GBA) ----------------------------------------------------------------

def _ds_dn(a: float, b: float, n: float) -> float:
    """d/dn of s(n) = (b − a)/(2ⁿ − 1)."""
    return -(b - a) * 2**n * math.log(2) / (2**n - 1) ** 2


@pytest.mark.parametrize("bits", [2.0, 3.0, 4.0, 3.5])
def test_bit_gradient_closed_form(bits):
    # x_q = round(z)·s + a with z = (x̂ − a)/s and STE: ∂x_q/∂n = (round(z) − z)·ds/dn
    rng = np.random.default_rng(int(bits * 10))
    x = rng.uniform(-1.5, 1.5, size=500)
    g = rng.normal(size=x.shape)
    a, b = -1.0, 1.2
    n = T(bits, dtype=torch.float64, requires_grad=True)
    q = fake_quant(torch.from_numpy(x), T(a, dtype=torch.float64), T(b, dtype=torch.float64), n)
    (q * torch.from_numpy(g)).sum().backward()
    s = (b - a) / (2**bits - 1)
    z = (np.clip(x, a, b) - a) / s
    expected = float((g * (np.round(z) - z)).sum() * _ds_dn(a, b, bits))
    assert n.grad.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("bits", [2.0, 3.0, 4.0, 6.0])
def test_bit_gradient_of_mse_matches_continuous_relaxation_and_gba_sign(bits):
    """For data spread over the range, E[(x_q − x)²] ≈ s(n)²/12: the STE gradient of the MSE wrt n should
    equal the derivative of that relaxation (here a central finite difference), and be negative as the GBA
    supplement (Eq. S3: ∂L/∂b_k < 0) predicts — more bits, less error."""
    torch.manual_seed(int(bits))
    a, b = -1.0, 1.0
    x = torch.rand(400_000, dtype=torch.float64) * (b - a) + a
    n = T(bits, dtype=torch.float64, requires_grad=True)
    loss = (fake_quant(x, T(a, dtype=torch.float64), T(b, dtype=torch.float64), n) - x).pow(2).mean()
    loss.backward()

    def relaxed(nn_: float) -> float:
        return ((b - a) / (2**nn_ - 1)) ** 2 / 12

    h = 1e-4
    fd = (relaxed(bits + h) - relaxed(bits - h)) / (2 * h)
    assert n.grad.item() < 0
    assert n.grad.item() == pytest.approx(fd, rel=0.03)
    # and the relaxation itself fits the measured error
    assert loss.item() == pytest.approx(relaxed(bits), rel=0.03)


def test_bit_gradient_negative_with_clipping_and_heavy_tails():
    torch.manual_seed(3)
    x = torch.distributions.StudentT(3.0).sample((50_000,)).double()
    n = T(3.0, dtype=torch.float64, requires_grad=True)
    loss = (fake_quant(x, T(-2.0, dtype=torch.float64), T(2.0, dtype=torch.float64), n) - x).pow(2).mean()
    loss.backward()
    assert math.isfinite(n.grad.item()) and n.grad.item() < 0


def test_tensor_bits_forward_equals_int_bits():
    torch.manual_seed(0)
    x = torch.randn(1000)
    for bits in (2, 4, 8):
        torch.testing.assert_close(fake_quant(x, T(-1.0), T(1.0), T(float(bits))),
                                   fake_quant(x, T(-1.0), T(1.0), bits))


# ---- symmetric ------------------------------------------------------------------------------------------

def test_symmetric_hand_values_3bit():
    # 3 bits: integers −3 … 3 (7 levels); α = 1.5 → step 0.5, grid {−1.5, −1, −0.5, 0, 0.5, 1, 1.5}
    x = T([-2.0, -0.7, -0.2, 0.0, 0.2, 0.3, 0.74, 1.6])
    # clip/0.5:   −3  −1.4  −0.4  0  0.4  0.6  1.48  3
    # round:      −3  −1    −0    0  0    1    1     3
    expected = T([-1.5, -0.5, 0.0, 0.0, 0.0, 0.5, 0.5, 1.5])
    torch.testing.assert_close(fake_quant_symmetric(x, T(1.5), 3), expected)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_grid_has_zero_and_2n_minus_1_levels(bits):
    qmax = 2 ** (bits - 1) - 1
    alpha = T(0.9, dtype=torch.float64)
    x = torch.linspace(-2, 2, 20001, dtype=torch.float64)
    q = fake_quant_symmetric(x, alpha, bits)
    k = q / alpha * qmax
    assert torch.allclose(k, k.round(), atol=1e-9)
    assert set(k.round().long().tolist()) == set(range(-qmax, qmax + 1))
    assert fake_quant_symmetric(T([0.0], dtype=torch.float64), alpha, bits).item() == 0.0
    # symmetric: Q(−x) = −Q(x) away from rounding ties
    torch.testing.assert_close(fake_quant_symmetric(-x[::7], alpha, bits), -fake_quant_symmetric(x[::7], alpha, bits))


def test_symmetric_rejects_one_bit():
    with pytest.raises(ValueError):
        fake_quant_symmetric(torch.zeros(3), T(1.0), 1)


def test_symmetric_gradients():
    bits, alpha = 3, 1.5  # qmax 3, step 0.5
    x = T([-2.0, -0.7, 0.3, 1.6], dtype=torch.float64, requires_grad=True)
    al = T(alpha, dtype=torch.float64, requires_grad=True)
    g = T([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    (fake_quant_symmetric(x, al, bits) * g).sum().backward()
    torch.testing.assert_close(x.grad, T([0.0, 2.0, 3.0, 0.0], dtype=torch.float64))
    # ∂Q/∂α: −1 below −α, +1 above α, (round(z) − z)/qmax inside with z = x·qmax/α
    # x = −0.7: z = −1.4 → (−1 + 1.4)/3 = 0.4/3;  x = 0.3: z = 0.6 → (1 − 0.6)/3 = 0.4/3
    expected = 1 * -1 + 2 * (0.4 / 3) + 3 * (0.4 / 3) + 4 * 1
    assert al.grad.item() == pytest.approx(expected)


# ---- binary ---------------------------------------------------------------------------------------------

def test_binarize_values_and_sign_of_zero():
    x = T([-2.0, -0.3, 0.0, 0.4, 1.5])
    torch.testing.assert_close(binarize(x, T(0.7)), T([-0.7, -0.7, 0.7, 0.7, 0.7]))


def test_binarize_gradients():
    x = T([-2.0, -1.0, -0.3, 0.0, 0.4, 1.5], requires_grad=True)
    alpha = T(1.0, requires_grad=True)
    g = T([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    (binarize(x, alpha) * g).sum().backward()
    # clipped STE: gradient passes where |x| ≤ α (inclusive)
    torch.testing.assert_close(x.grad, T([0.0, 2.0, 3.0, 4.0, 5.0, 0.0]))
    # ∂(sign·α)/∂α = sign(x) (sign(0) = +1): −1 −2 −3 +4 +5 +6 = 9
    assert alpha.grad.item() == pytest.approx(9.0)


def test_binarize_per_channel_alpha():
    x = T([[-1.0, 2.0], [0.5, -0.5]], requires_grad=True)
    alpha = T([[0.5], [2.0]], requires_grad=True)
    out = binarize(x, alpha)
    torch.testing.assert_close(out, T([[-0.5, 0.5], [2.0, -2.0]]))
    out.sum().backward()
    torch.testing.assert_close(alpha.grad, T([[0.0], [0.0]]))
    torch.testing.assert_close(x.grad, T([[0.0, 0.0], [1.0, 1.0]]))


def test_affine_keeps_zero_on_the_grid_and_covers_ranges_without_zero():
    from srq.quant.functional import fake_quant_affine

    # range [-1, 2] at 2 bits: s = 1, z = 1, grid {-1, 0, 1, 2}
    x = torch.tensor([-3.0, -0.4, 0.0, 0.6, 1.4, 2.2])
    out = fake_quant_affine(x, torch.tensor(-1.0), torch.tensor(2.0), 2)
    assert out.tolist() == [-1.0, 0.0, 0.0, 1.0, 1.0, 2.0]
    # an all-positive range [0.25, 0.75] is widened to [0, 0.75]: grid {0, 0.25, 0.5, 0.75}, nothing above clipped
    x = torch.tensor([0.25, 0.4, 0.75])
    out = fake_quant_affine(x, torch.tensor(0.25), torch.tensor(0.75), 2)
    assert out.tolist() == [0.25, 0.5, 0.75]


def test_quantized_conv_transpose_matches_float_at_8_bits():
    from srq.quant import QuantConfig, calibrate, placement, prepare

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ConvTranspose2d(4, 3, 4, 2, 1))
    x = torch.rand(2, 3, 8, 8)
    ref = model(x)
    prepare(model, QuantConfig(w_bits=8, a_bits=8))
    calibrate(model, [x], progress=False)
    assert [e.kind for e in placement(model)] == ["conv2d", "conv_transpose2d"]
    assert model[1].weight_quantizer.channel_axis == 1  # output channels of a transposed conv weight
    out = model(x)
    assert out.shape == ref.shape and 0 < (out - ref).abs().max() < 0.05
