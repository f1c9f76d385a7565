"""Q-MambaIR's DLS and RFA (srq.quant.grids.dls / rfa), QuantSR's RLQ and tanh rounding, the qmambair and quantsr
methods: gradients against the papers' equations, RFA at init = round-to-nearest, integer deployment, a constant
input under DLS, placement on Mamba models, end-to-end runs with a save/load round trip, Table 4 complexity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import srq
from srq.data.samples import sample_calibration
from srq.engine.qat import QATConfig
from srq.errors import SrqError
from srq.methods import QMambaIR, QuantSR, get_method
from srq.methods.base import Recipe
from srq.methods.qmambair import PAPER_TRAIN, dls_scope_modules
from srq.paths import weights_root
from srq.quant import QuantConfig, Quantizer, prepare, quantizers
from srq.quant.complexity import complexity, complexity_from_dict, format_complexity
from srq.quant.grids.dls import DLS_FLOOR, dls_range, dls_statistics
from srq.quant.grids.rfa import THRESHOLD_MARGIN, rfa_levels, rfa_surrogate
from srq.quant.soft_rounding import TANH_TEMPERATURE, tanh_round


def _calibrated(q: Quantizer, x: torch.Tensor) -> Quantizer:
    q.start_calibration()
    q(x)
    q.finish_calibration()
    return q


# ---- DLS ---------------------------------------------------------------------------------------------------------

def test_dls_gradients_follow_eq6_and_the_uniform_grid():
    """∂Q/∂w₁ = Σ ∂Q/∂α̂ · sign(w₁ᵀΦ′)·Φ′ and ∂Q/∂w₂ = Σ ∂Q/∂β̂ · Φ, with the grid's (SPR²Q Eq. 8) bound gradients:
    inside the range ∂Q/∂α̂ = 2(R − u)/K, ∂Q/∂β̂ = 0; below ∂Q/∂α̂ = −1, ∂Q/∂β̂ = 1; above both 1; x gets 1 inside."""
    torch.manual_seed(0)
    bits, k = 3, 7
    x = (torch.randn(2, 3, 5, 5, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    q = Quantizer(bits, mode="dls", batch_axis=0).double()
    _calibrated(q, x.detach())
    with torch.no_grad():
        q.w1.copy_(torch.tensor([0.3, 2.0, -0.1, 0.2]))  # not the init: every statistic matters
        q.w2.copy_(torch.tensor([0.9, 0.1, 0.05, -0.02]))
    q(x).sum().backward()

    flat = x.detach().reshape(2, -1)
    mu, sd, lo, hi = flat.mean(1), flat.std(1, unbiased=False), flat.amin(1), flat.amax(1)
    phi = torch.stack([mu, sd, lo, hi], 1)
    phi_abs = torch.stack([mu.abs(), sd, lo, hi], 1)
    a_raw = phi_abs @ q.w1.detach()
    alpha, beta = a_raw.abs(), phi @ q.w2.detach()
    g_w1, g_w2, g_x = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), torch.zeros_like(flat)
    for n in range(2):
        a, b = beta[n] - alpha[n], beta[n] + alpha[n]
        s = (b - a) / k
        for j, v in enumerate(flat[n]):
            if v < a:
                d_alpha, d_beta = -1.0, 1.0
            elif v > b:
                d_alpha, d_beta = 1.0, 1.0
            else:
                u = (v - a) / s
                d_alpha, d_beta = 2 * (torch.round(u) - u) / k, 0.0
                g_x[n, j] = 1.0
            g_w1 += d_alpha * torch.sign(a_raw[n]) * phi_abs[n]
            g_w2 += d_beta * phi[n]
    assert torch.allclose(q.w1.grad, g_w1, atol=1e-9)
    assert torch.allclose(q.w2.grad, g_w2, atol=1e-9)
    assert torch.allclose(x.grad.reshape(2, -1), g_x)


@pytest.mark.parametrize("mode, lower, upper", [
    ("dls", lambda m, s, lo, hi: m - 3 * s, lambda m, s, lo, hi: m + 3 * s),
    ("dls_4sigma", lambda m, s, lo, hi: m - 4 * s, lambda m, s, lo, hi: m + 4 * s),
    ("dls_minmax", lambda m, s, lo, hi: lo, lambda m, s, lo, hi: hi),
    ("dls_mean_range", lambda m, s, lo, hi: m - (hi - lo) / 2, lambda m, s, lo, hi: m + (hi - lo) / 2),
])
def test_dls_initialisations_are_table6(mode, lower, upper):
    x = torch.randn(3, 4, 6, 6) * torch.tensor([0.5, 1.0, 3.0]).view(3, 1, 1, 1) + 0.7
    q = Quantizer(4, mode=mode, batch_axis=0)
    lo_, hi_ = dls_range(x, q.w1, q.w2)
    flat = x.reshape(3, -1)
    m, s, mn, mx = flat.mean(1), flat.std(1, unbiased=False), flat.amin(1), flat.amax(1)
    assert torch.allclose(lo_.flatten(), lower(m, s, mn, mx), atol=1e-5)
    assert torch.allclose(hi_.flatten(), upper(m, s, mn, mx), atol=1e-5)


def test_dls_ranges_are_per_sample():
    x = torch.cat([torch.randn(1, 2, 8, 8) * 0.01, torch.randn(1, 2, 8, 8) * 50])
    q = _calibrated(Quantizer(4, mode="dls", batch_axis=0), x)
    with torch.no_grad():
        both = q(x)
        alone = torch.cat([q(x[:1]), q(x[1:])])
    assert torch.equal(both, alone)
    assert (both[0] - x[0]).abs().max() < 0.01  # the small sample keeps a fine grid


@pytest.mark.parametrize("value", [0.0, 3.5, -1e4])
def test_dls_on_a_constant_tensor_is_finite(value):
    x = torch.full((2, 3, 4, 4), value, requires_grad=True)
    for mode in ("dls", "dls_4sigma", "dls_minmax", "dls_mean_range"):
        q = _calibrated(Quantizer(2, mode=mode, batch_axis=0), x.detach())
        y = q(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(q.w1.grad).all() and torch.isfinite(q.w2.grad).all()
        assert torch.isfinite(x.grad).all()
        tol = DLS_FLOOR + 1e-3 * abs(value)  # the floor's half-step, plus float32 rounding at |value| 1e4
        assert (y - value).abs().max().item() <= tol
        x.grad = None


# Max (1960), Table: the MSE-optimal uniform quantizer of N(0, 1) with 4 / 8 / 16 levels has the step 0.9957 /
# 0.5860 / 0.3352, i.e. levels from −1.5·Δ … 1.5·Δ, −3.5·Δ … 3.5·Δ, −7.5·Δ … 7.5·Δ.
@pytest.mark.parametrize("bits, half_width", [(2, 1.5 * 0.9957), (3, 3.5 * 0.5860), (4, 7.5 * 0.3352)])
def test_dls_mse_fits_the_optimal_uniform_range_in_sigma_units(bits, half_width):
    """``dls_mse`` calibrates ``[μ + l·σ, μ + u·σ]`` per sample with the MSE-optimal ``(l, u)`` of the standardised
    values, at the quantizer's own bits: on Gaussian samples of different means and spreads that is Max's range."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, 32, 32, generator=g) * torch.linspace(0.1, 20, 16).view(-1, 1, 1, 1) \
        + torch.linspace(-50, 50, 16).view(-1, 1, 1, 1)
    q = _calibrated(Quantizer(bits, mode="dls_mse", batch_axis=0), x)
    (lo, w1_sigma), (mu, w2_sigma) = (q.w1.detach()[:2].tolist(), q.w2.detach()[:2].tolist())
    assert lo == 0 and mu == 1 and q.w1[2:].abs().sum() == 0 and q.w2[2:].abs().sum() == 0
    assert w1_sigma == pytest.approx(half_width, abs=0.03) and abs(w2_sigma) < 0.03
    lower, upper = dls_range(x, q.w1, q.w2)
    flat = x.reshape(16, -1)
    m, s = flat.mean(1), flat.std(1, unbiased=False)
    assert torch.allclose(upper.detach().flatten(), m + (w2_sigma + w1_sigma) * s, rtol=1e-4, atol=1e-3)
    assert torch.allclose(lower.detach().flatten(), m + (w2_sigma - w1_sigma) * s, rtol=1e-4, atol=1e-3)


def test_dls_mse_clips_a_heavy_tail_and_skips_constant_samples():
    """Skewed data (a ReLU's output) gets an asymmetric range with a lower error than [μ − 3σ, μ + 3σ]; constant
    samples do not count, and a calibration of only constant samples says so."""
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(6, 4, 16, 16, generator=g).exp(), torch.full((2, 4, 16, 16), 7.0)])
    fitted, fixed = (_calibrated(Quantizer(2, mode=m, batch_axis=0), x) for m in ("dls_mse", "dls"))
    assert float(fitted.w2.detach()[1]) > 0.1  # the centre moves towards the bulk above the mean
    with torch.no_grad():
        err = [float((q(x[:6]) - x[:6]).square().mean()) for q in (fitted, fixed)]
    assert err[0] < 0.8 * err[1], err
    q = Quantizer(2, mode="dls_mse", batch_axis=0)
    q.start_calibration()
    q(torch.full((2, 3, 4, 4), 1.0))
    with pytest.raises(RuntimeError, match="every sample was constant"):
        q.finish_calibration()


# ---- RFA -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rfa_at_init_is_round_to_nearest(bits):
    torch.manual_seed(bits)
    w = torch.randn(8, 5, 3, 3) * 0.1
    q = _calibrated(Quantizer(bits, mode="rfa", channel_axis=0, num_channels=8), w)
    s = q.step.detach().view(-1, 1, 1, 1)
    expected = torch.clamp(torch.round(w / s), -2 ** (bits - 1), 2 ** (bits - 1) - 1) * s
    with torch.no_grad():
        assert torch.equal(q(w), expected)
    wg = w.clone().requires_grad_()
    q(wg).sum().backward()  # the STE at init: slope 1 between the outer thresholds, 0.1 outside
    z = w / s
    inside = (z > q.thresholds[0].item()) & (z <= q.thresholds[-1].item())
    assert torch.allclose(wg.grad, torch.where(inside, 1.0, 0.1))


def test_rfa_gradients_follow_eq8():
    """2 bits, step 1, thresholds moved off the midpoints: the forward picks levels by the thresholds, the backward
    slope is 0.1 outside [T₁, T₃] and 1/(Tᵢ₊₁ − Tᵢ) between thresholds; thresholds and step get the knots' gradients."""
    q = _calibrated(Quantizer(2, mode="rfa", channel_axis=0, num_channels=1), torch.randn(1, 4))
    t1, t2, t3 = -1.3, -0.6, 0.7
    with torch.no_grad():
        q.step.fill_(1.0)
        q.thresholds.copy_(torch.tensor([t1, t2, t3]))
    w = torch.tensor([[-3.0, -1.0, 0.2, 0.9]], requires_grad=True)
    y = q(w)
    assert y.tolist() == [[-2.0, -1.0, 0.0, 1.0]]
    y.sum().backward()
    g1, g2 = t2 - t1, t3 - t2
    assert torch.allclose(w.grad, torch.tensor([[0.1, 1 / g1, 1 / g2, 0.1]]))
    # ∂y/∂Tᵢ of y = cᵢ + (z − Tᵢ)/(Tᵢ₊₁ − Tᵢ): (z − Tᵢ₊₁)/g², ∂y/∂Tᵢ₊₁ = −(z − Tᵢ)/g²; outside −0.1
    expected_t = torch.tensor([-0.1 + (-1.0 - t2) / g1**2,
                               -(-1.0 - t1) / g1**2 + (0.2 - t3) / g2**2,
                               -(0.2 - t2) / g2**2 - 0.1])
    assert torch.allclose(q.thresholds.grad, expected_t, atol=1e-6)
    # ∂ŵ/∂s = q − y′(z)·z, times LSQ's gradient scale 1/√(N·Qp) (N = 4 elements, Qp = 1)
    slopes = torch.tensor([0.1, 1 / g1, 1 / g2, 0.1])
    z = w.detach()[0]
    assert torch.allclose(q.step.grad, ((y.detach()[0] - slopes * z).sum() / math.sqrt(4 * 1)).reshape(1), atol=1e-6)


def test_rfa_surrogate_matches_finite_differences():
    torch.manual_seed(1)
    t = torch.tensor([-3.4, -2.6, -1.45, -0.55, 0.6, 1.3, 2.52], dtype=torch.float64, requires_grad=True)  # 3 bits
    z = (torch.rand(40, dtype=torch.float64) * 10 - 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda zz, tt: rfa_surrogate(zz, tt, 3), (z, t))
    nu2u = rfa_surrogate(torch.tensor([-9.0, 9.0], requires_grad=True), t.detach().float(), 3, flat_slope=0.0)
    assert nu2u.requires_grad


def test_rfa_thresholds_stay_between_their_levels():
    q = _calibrated(Quantizer(3, mode="rfa", channel_axis=0, num_channels=2), torch.randn(2, 9))
    with torch.no_grad():
        q.thresholds.copy_(torch.tensor([5.0, -9.0, 0.3, 0.2, 0.1, 7.0, -1.0]))
    q.project_bounds_()
    c = torch.arange(1, 8) - 4.5
    t = q.thresholds.detach()
    assert (t >= c - 0.5 + THRESHOLD_MARGIN - 1e-6).all() and (t <= c + 0.5 - THRESHOLD_MARGIN + 1e-6).all()
    assert (t.diff() >= 2 * THRESHOLD_MARGIN - 1e-6).all()


def test_tanh_rounding_backward_is_the_staircase_slope():
    z = torch.tensor([0.0, 0.25, 0.5, 1.49, -0.7], requires_grad=True)
    out = tanh_round(z)
    assert out.tolist() == torch.round(z.detach()).tolist()
    out.sum().backward()
    k = TANH_TEMPERATURE
    r = z.detach() - torch.floor(z.detach())
    assert torch.allclose(z.grad, k * (1 - torch.tanh(k * (r - 0.5)) ** 2) / (2 * math.tanh(k / 2)))


def test_rlq_shifts_are_per_channel_and_learn():
    x = torch.randn(2, 3, 6, 6) + torch.tensor([0.0, 5.0, -5.0]).view(1, 3, 1, 1)
    q = _calibrated(Quantizer(4, mode="rlq", batch_axis=0, dan_channels=3, dan_axis=1), x)
    assert q.shift.shape == (3,) and not q.shift.any()
    q(x.requires_grad_()).pow(2).sum().backward()
    assert q.shift.grad.shape == (3,) and (q.shift.grad != 0).all()


# ---- methods --------------------------------------------------------------------------------------------------------

def _tiny(cls, hr_folder, **fields):
    return cls(train_data=(str(hr_folder),), cache_dir="", train=QATConfig(iterations=3, batch=2, hr_patch=32,
                                                                              val_set=""), **fields)


def test_methods_are_registered_with_the_papers_defaults():
    assert get_method("qmambair").recipe is QMambaIR and get_method("quantsr").recipe is QuantSR
    r = QMambaIR()
    assert (r.train.iterations, r.train.batch, r.train.lr, r.train.hr_patch) == (20000, 8, 2e-4, 64)
    assert r.train == PAPER_TRAIN and r.train.optimizer == "adam"
    assert Recipe.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("fields, says", [
    ({"activations": "minmax"}, "activations must be one of"), ({"weights": "round"}, "weights must be one of"),
    ({"dls_init": "5sigma"}, "dls_init"), ({"dls_scope": "body"}, "dls_scope"), ({"w_bits": 1}, "at least 2 bits"),
])
def test_bad_fields_are_one_line(fields, says):
    with pytest.raises(SrqError, match=says):
        QMambaIR(**fields)


def test_mode_rules_are_checked():
    with pytest.raises(SrqError, match="a_mode must be one of"):
        QuantConfig(a_mode_rules=[[".*", "rfa"]])
    with pytest.raises(SrqError, match="matches no layer or operand"):
        prepare(srq.create_model("srq_tiny", 4, None), QuantConfig(a_mode_rules=[["nothing", "dls"]]))
    assert "a_mode_rules" not in QuantConfig().to_dict()  # configs of other methods are written as before


def test_placement_on_mambairv2_light_and_reload(tmp_path):
    """DLS on every scan/attention operand and on the layers of ASSM and window attention; LSQ+ elsewhere; RFA
    weights; a save/load round trip (random weights, one calibration patch) rebuilds the grids and outputs."""
    fp = srq.create_model("mambairv2_light", 4, None)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    recipe = QMambaIR(w_bits=4, a_bits=4)
    q = recipe.prepare(fp, x)
    assert len(dls_scope_modules(fp)) == 40  # 20 layers × (assm, win_mhsa)
    grids = {n: m.mode for n, m in quantizers(q)}
    points = [n for n, m in quantizers(q) if hasattr(m, "srq_point_kind")]
    assert len(points) == 180 and all(grids[p] == "dls" for p in points)
    layer = "layers.0.residual_group.layers.0."
    for name in ("assm.in_proj.0", "assm.CPE.0", "assm.out_proj", "win_mhsa.proj"):
        assert grids[layer + name + ".input_quantizer"] == "dls"
    assert grids[layer + "wqkv.input_quantizer"] == "lsqplus" and grids[layer + "convffn1.fc1.input_quantizer"] == \
        "lsqplus"
    assert {g for n, g in grids.items() if n.endswith("weight_quantizer")} == {"rfa"}
    srq.quant.calibrate(q, [x], progress=False)
    setattr(q, "srq_spec", getattr(fp, "srq_spec"))
    srq.save(q, tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(x), q(x))


def test_all_scope_on_a_cnn(hr_folder):
    fp = srq.create_model("srq_tiny", 4, None)
    q = QMambaIR(dls_scope="auto").prepare(fp, torch.rand(1, 3, 16, 16))
    roles = {n + ".input_quantizer": getattr(m, "srq_role") for n, m in q.named_modules() if hasattr(m, "srq_role")}
    grids = {n: m.mode for n, m in quantizers(q) if n.endswith("input_quantizer")}
    assert {g for n, g in grids.items() if roles[n] == "body"} == {"dls"}
    assert {g for n, g in grids.items() if roles[n] != "body"} == {"lsqplus"}  # 8-bit first/last: static
    same = QMambaIR(first_last="same").prepare(fp, torch.rand(1, 3, 16, 16))
    assert {m.mode for n, m in quantizers(same) if n.endswith("input_quantizer")} == {"dls"}
    with pytest.raises(SrqError, match="marks no scan or attention operands"):
        QMambaIR(dls_scope="ssm").prepare(fp, torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("fields", [{}, {"activations": "rlq", "weights": "tanh"},
                                    {"weights": "nu2u", "dls_init": "minmax"}])
def test_qmambair_runs_and_reloads_on_the_tiny_model(fields, hr_folder, tmp_path):
    fp = srq.create_model("srq_tiny", 4, "official")
    recipe = _tiny(QMambaIR, hr_folder, w_bits=2, a_bits=2, **fields)
    q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    assert len(q.srq_report["training"]["log"]) == 3 and q.srq_report["quantizer_grids"]
    srq.save(q, tmp_path / "run")
    xin = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(xin), q(xin))
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_rfa_trained_weights_deploy_as_integers(hr_folder):
    fp = srq.create_model("srq_tiny", 4, "official")
    q = srq.quantize(fp, _tiny(QMambaIR, hr_folder, w_bits=3, a_bits=4), sample_calibration(4)[:4], progress=False)
    moved = 0
    for name, m in q.named_modules():
        wq = getattr(m, "weight_quantizer", None)
        if wq is None:
            continue
        step = wq.step.detach().view(-1, *([1] * (m.weight.dim() - 1)))
        with torch.no_grad():  # what is deployed: n-bit integers and one step per output channel
            ints = rfa_levels(m.weight / step, wq.thresholds, wq.bits)
            assert torch.equal(wq(m.weight), ints * step), name  # is what the model computes with
        assert torch.equal(ints, ints.round()), name
        assert ints.min() >= -2 ** (wq.bits - 1) and ints.max() <= 2 ** (wq.bits - 1) - 1
        moved += int((wq.thresholds.detach() != torch.arange(1, 2**wq.bits) - 2 ** (wq.bits - 1) - 0.5).any())
    assert moved > 0  # training moved thresholds
    qparams = pytest.importorskip("srq.export.qparams")
    layer = q.get_submodule("body.0.conv1")  # a 3-bit body layer: its weights as int8 values and a scale per channel
    with torch.no_grad():
        packed = qparams.int_weight(layer.weight_quantizer(layer.weight), layer.weight_quantizer)
    assert packed.q.dtype == torch.int8 and torch.equal(packed.dequantize(), layer.weight_quantizer(layer.weight))


@pytest.mark.filterwarnings("ignore:.*has collapsed")  # 3 training steps
@pytest.mark.skipif(not (weights_root() / "imdn_x4.pth").is_file(), reason="IMDN x4 weights not at hand")
def test_qmambair_and_quantsr_on_imdn_through_the_pipeline(hr_folder, tmp_path):
    fp = srq.create_model("imdn", 4, "official")
    calib = sample_calibration(4)[:2]
    for cls in (QMambaIR, QuantSR):
        recipe = _tiny(cls, hr_folder, w_bits=4, a_bits=4)
        run = srq.pipeline.run(fp, recipe, calib, name="imdn", scale=4, output=tmp_path / cls.name, progress=False)
        loaded = srq.load(tmp_path / cls.name)
        xin = calib[:1, :, :24, :24]
        with torch.no_grad():
            assert torch.equal(loaded(xin), run.model(xin))
        meta = json.loads((tmp_path / cls.name / "srq.json").read_text())
        assert meta["recipe"]["method"] == cls.name
        if cls is QMambaIR:
            assert meta["quant_config"]["a_mode_rules"] == [[".*", "dls"], ["fea_conv", "lsqplus"], ["upsampler\\.0",
                                                                                            "lsqplus"]]
            assert "quantizer grids" in (tmp_path / cls.name / "placement.txt").read_text()
            state = loaded.state_dict()
            assert any(k.endswith("input_quantizer.w1") for k in state) and any(k.endswith("thresholds") for k in state)
        else:
            assert any(k.endswith("input_quantizer.shift") for k in loaded.state_dict())


@pytest.mark.skipif(not (weights_root() / "imdn_x4.pth").is_file(), reason="IMDN x4 weights not at hand")
def test_dls_mse_initialisation_keeps_imdn_w2a2_from_collapsing():
    """IMDN x4 at W2A2, calibrated and not trained: Table 6's 3σ ranges put the 2-bit levels far apart on its
    heavy-tailed activations and the output collapses (here 7.7 dB PSNR against the FP output); the fitted ranges
    do not (25.0 dB). On 8 DIV2K patches: 6.2 against 26.5 dB, LSQ+ 27.5 (docs/methods.md)."""
    fp = srq.create_model("imdn", 4, "official").eval()
    calib = sample_calibration(4)[:4, :, :32, :32]
    with torch.no_grad():
        ref = fp(calib).clamp(0, 1)
    psnr = {}
    for init in ("3sigma", "mse"):
        q = QMambaIR(w_bits=2, a_bits=2, dls_init=init).prepare(fp, calib[:1])
        srq.quant.calibrate(q, [calib], progress=False)
        with torch.no_grad():
            psnr[init] = -10 * math.log10(float((q(calib).clamp(0, 1) - ref).square().mean()))
    assert psnr["3sigma"] < 12 and psnr["mse"] > 20, psnr


def test_complexity_rows_follow_the_cost():
    fp = srq.create_model("srq_tiny", 4, "official")
    calib = sample_calibration(4)[:2]
    q = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), calib, progress=False)
    cost = srq.quant.model_cost(q, scale=4)
    row = complexity(cost, "W4A4")
    assert row.params == pytest.approx(cost.size_bits / 32) and row.ops == pytest.approx(cost.bitops / 1024)
    assert row.params_reduction == pytest.approx(1 - 1 / cost.compression)
    assert row.ops_reduction == pytest.approx(1 - 1 / cost.bitops_reduction)
    fp_row = complexity(srq.quant.model_cost(fp, scale=4), "FP")
    assert fp_row.params_reduction == pytest.approx(0) and np.isclose(fp_row.ops, fp_row.fp32_ops)
    assert "| W4A4 |" in format_complexity([fp_row, row])
    b64 = complexity(cost, "W4A4", convention="bops64")  # W4A4 body MACs count 16/64, the 8-bit edges 64/64
    assert b64.ops == pytest.approx(sum(c.macs * c.w_bits * c.a_bits / 64 for c in cost.layers))
    assert complexity_from_dict(json.loads(json.dumps(cost.to_dict())), "W4A4") == row  # a result file's cost


def test_qmambair_training_resumes_bit_identically(hr_folder, tmp_path):
    """A kill in the middle of Q-MambaIR's QAT, then a resumed run: the same DLS weights, thresholds and steps."""
    from srq.data.training import TrainingSet
    from srq.engine.checkpoint import WorkArea, resumable
    from srq.engine.qat import train_qat

    fp = srq.create_model("srq_tiny", 4, "official")
    cfg = QATConfig(iterations=5, batch=2, hr_patch=32, lr=1e-3, quant_lr=1e-2)

    def setup():
        calib = sample_calibration(4)[:4]
        q = QMambaIR(w_bits=2, a_bits=2).prepare(fp, calib[:1])
        srq.quant.calibrate(q, [calib], progress=False)
        quant = [p for _, m in quantizers(q) for p in m.parameters()]
        weights = [p for p in q.parameters() if all(p is not t for t in quant)]
        return q, weights, quant, TrainingSet(hr_folder, 4, 32, seed=0)

    class Killed(Exception):
        pass

    class KillAt:
        def __init__(self, data):
            self.data = data

        def batch(self, step, *args):
            if step == 3:
                raise Killed
            return self.data.batch(step, *args)

    q, weights, quant, data = setup()
    train_qat(q, None, data, cfg, weights=weights, quant_params=quant, progress=False)
    expected = {k: v.clone() for k, v in q.state_dict().items()}
    q, weights, quant, data = setup()
    work = WorkArea.open(tmp_path / "work", {"run": 1}, resume=False, every_steps=2)
    with pytest.raises(Killed), resumable(work):
        train_qat(q, None, KillAt(data), cfg, weights=weights, quant_params=quant, progress=False)
    q, weights, quant, data = setup()
    with resumable(WorkArea.open(tmp_path / "work", {"run": 1}, resume=True, every_steps=2)):
        train_qat(q, None, data, cfg, weights=weights, quant_params=quant, progress=False)
    assert all(torch.equal(v, expected[k]) for k, v in q.state_dict().items())
    start = setup()[0].state_dict()
    assert any(k.endswith("thresholds") and not torch.equal(v, start[k]) for k, v in expected.items())


@pytest.mark.parametrize("value", [None, 2.5])  # a random input, and a constant one (range at the floor)
def test_dls_fused_and_composed_give_the_same_training_signal(value, monkeypatch):
    import srq.quant.grids.base as grids

    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64) * 2 + 0.3 if value is None else \
        torch.full((3, 4, 5, 5), value, dtype=torch.float64)
    q = _calibrated(Quantizer(3, mode="dls", batch_axis=0).double(), x)
    with torch.no_grad():
        q.w1.copy_(torch.tensor([0.3, 2.0, -0.1, 0.2]))
        q.w2.copy_(torch.tensor([0.9, 0.1, 0.05, -0.02]))
    results = []
    for fused in (True, False):
        monkeypatch.setattr(grids, "FUSED", fused)
        xi = x.clone().requires_grad_()
        out = q(xi)
        results.append([out, *torch.autograd.grad((out * out.detach().cos()).sum(), [xi, q.w1, q.w2])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_fake_quant_range_matches_fake_quant_per_channel():
    from srq.quant.functional import fake_quant, fake_quant_range, round_ste

    g = torch.Generator().manual_seed(6)
    x = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2).requires_grad_()
    lower = torch.tensor([-1.0, -0.5, 0.2], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_()
    upper = torch.tensor([1.0, 2.0, 0.2 + 1e-12], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_()
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)
    fused = fake_quant_range(x, lower, upper, 2)
    composed = fake_quant(x, lower, upper, 2, round_ste)
    torch.testing.assert_close(fused, composed, rtol=0, atol=0)
    for a, b in zip(torch.autograd.grad((fused * w).sum(), [x, lower, upper]),
                    torch.autograd.grad((composed * w).sum(), [x, lower, upper])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dls_statistics_are_exact_per_sample_even_far_from_zero(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randn(4, 9, 9, generator=g) * 0.01 + 500.0, torch.randn(4, 9, 9, generator=g)])
    x = x.to(dtype)
    phi, phi_abs = dls_statistics(x)
    ref = x.double().reshape(2, -1)
    want = torch.stack([ref.mean(1), ref.std(1, correction=0), ref.amin(1), ref.amax(1)], dim=1)
    assert phi.dtype == torch.float32 and phi.shape == (2, 4)
    torch.testing.assert_close(phi.double(), want, rtol=1e-5, atol=0)  # σ/μ = 2e-5: no cancellation
    torch.testing.assert_close(phi_abs[:, 0], phi[:, 0].abs())
    assert torch.equal(x, x.to(dtype))  # the input is not modified
