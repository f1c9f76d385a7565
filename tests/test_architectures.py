"""Issue 32's architecture torture test: every synthetic architecture of ``tests/arch_zoo.py`` × every registered
method (tiny budgets) → quantize, check outputs and placement, save/load bit-identical; every zoo model through
prepare → calibrate → save/load; targeted checks of block detection, memory format and first-layer protection.

A case that fails because of a known srq bug is marked ``xfail(strict=True)`` with the reason (none at present).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import srq
from srq.data import write_image
from srq.data.samples import sample_calibration, sample_images
from srq.engine.distill import FinetuneConfig, find_blocks
from srq.engine.evaluate import evaluate
from srq.engine.qat import QATConfig
from srq.errors import SrqError
from srq.methods import list_methods
from srq.quant import calibrate, float_layers, model_cost, placement, prepare

from arch_zoo import ARCHS, INPLACE_ARCHS, BSConvNet

torch.set_num_threads(1)
# one or two random steps on random weights often end worse than they started: that warning is expected here
pytestmark = pytest.mark.filterwarnings("ignore:.*made the model worse")

PATCH = 12  # LR calibration patch (a multiple of the token mixer's 4-pixel window)
N_CALIB = 4
METHODS = [m.name for m in list_methods()]
QAT_RECIPES = {"LSQ", "LSQPlus", "PAMS", "DoReFa", "QMambaIR", "QuantSR", "QuantSRPlus"}
TRAINING = {m.name for m in list_methods()
            if m.preset.get("fine_tune") or m.recipe.__name__ in QAT_RECIPES | {"GBA", "AdaBM", "PTQ4SR", "SPR2Q"}}
_FLOAT_TYPES = (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)


# ---- tiny budgets --------------------------------------------------------------------------------------------------

def tiny_recipe(method: str, scale: int, hr_folder) -> srq.methods.Recipe:
    """``method``'s recipe at W4A4 with a budget of one or two steps per stage."""
    info = srq.methods.get_method(method)
    ft = FinetuneConfig(steps=2, batch=2)
    cls = info.recipe.__name__
    fields: dict = {"w_bits": 4, "a_bits": 4}
    if cls in ("MinMax", "Percentile", "OMSE"):
        fields["finetune_config"] = ft
    elif cls == "GBA":
        fields.update(init_batch=2, init_epochs=1, finetune_config=dataclasses.replace(ft, outlier_factor=1000.0),
                      alloc=FinetuneConfig(lr=0.1, steps=2, batch=2, lambda_feat=0.0))
    elif cls == "AdaBM":
        fields.update(epochs=1, batch=2, calib_batch=2)
    elif cls == "PTQ4SR":
        fields.update(calib_batch=2, act_phase=FinetuneConfig(lr=5e-3, lr_min=2e-3, steps=2, batch=2, lambda_feat=5.0,
                                                              feature_loss="energy"),
                      weight_phase=FinetuneConfig(lr=5e-6, lr_min=2e-6, steps=2, batch=2, lambda_feat=5.0,
                                                  feature_loss="energy"))
    elif cls == "SPR2Q":
        fields.update(rank=2, group_size=2, iterations=2, osrc_iterations=2, batch=2)
    elif cls in QAT_RECIPES:
        fields.update(train=QATConfig(iterations=2, batch=2, hr_patch=PATCH * scale, val_set=""),
                      train_data=(str(hr_folder),), cache_dir="")
    else:
        pytest.fail(f"no tiny budget for method {method} ({cls}); add one to tiny_recipe")
    return info.create(**fields)


# ---- known failures ------------------------------------------------------------------------------------------------
# (arch, method) → reason (xfail(strict=True)): "issue 32 item N: ..." for a known bug, "new: ..." otherwise.
# Empty: every case of the full matrix passes on the working tree as of issue 32's fixes.
XFAIL: dict[tuple[str, str], str] = {}


def _case(arch: str, method: str):
    marks = []
    if (arch, method) in XFAIL:
        marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(arch, method)]))
    return pytest.param(arch, method, marks=marks, id=f"{arch}-{method}")


# the default run covers every arch and every method: method i runs on archs 2i and 2i + 1 (modulo the number of
# archs), the in-place model on one method of each kind of training; the rest of the matrix is marked slow
# (pytest -m slow tests/test_architectures.py runs it: about 5 minutes on a busy 2-core CPU)
ARCH_NAMES = list(ARCHS)
DEFAULT_PER_METHOD = 2


def _default_cases() -> set[tuple[str, str]]:
    chosen = set()
    n = len(ARCH_NAMES)
    for i, method in enumerate(METHODS):
        for k in range(DEFAULT_PER_METHOD):
            chosen.add((ARCH_NAMES[(i * DEFAULT_PER_METHOD + k) % n], method))
    # the in-place refusal in each kind of training (it fails at the first backward pass: cheap), and PTQ on it
    for method in ("minmax_ft", "gba", "adabm", "ptq4sr", "spr2q", "lsq", "minmax"):
        chosen.add(("inplace", method))
    return chosen


DEFAULT = _default_cases()


def test_the_default_run_covers_every_arch_and_every_method():
    assert {a for a, _ in DEFAULT} == set(ARCHS) and {m for _, m in DEFAULT} == set(METHODS)


def _matrix():
    for arch in ARCH_NAMES:
        for method in METHODS:
            case = _case(arch, method)
            if (arch, method) not in DEFAULT:
                case = pytest.param(*case.values, marks=[*case.marks, pytest.mark.slow], id=case.id)
            yield case


# ---- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    """Three 96-pixel HR crops of the sample photos (QAT training data)."""
    folder = tmp_path_factory.mktemp("hr")
    for name, img in sample_images("train")[:3]:
        write_image(folder / f"{name}.png", np.ascontiguousarray(img[:96, :96]))
    return folder


_CALIB: dict[int, torch.Tensor] = {}


def calib_for(scale: int) -> torch.Tensor:
    if scale not in _CALIB:
        _CALIB[scale] = sample_calibration(scale, n=N_CALIB, patch=PATCH)
    return _CALIB[scale]


def build(arch: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    model, scale = ARCHS[arch]()
    return model.eval(), scale


# ---- checks --------------------------------------------------------------------------------------------------------

def check_placement(fp: nn.Module, q: nn.Module) -> None:
    """Every Conv/Linear of the float model is quantized in ``q``, listed among its float layers with a reason, or in
    a block QuantSR+'s slimming removed (``srq_structure["removed"]``)."""
    quantized = {e.name for e in placement(q) if e.w_bits is not None and e.a_bits is not None}
    floats = {f.name: f.reason for f in float_layers(q)}
    removed = tuple(f"{n}." for n in (getattr(q, "srq_structure", None) or {}).get("removed", []))
    for name, m in fp.named_modules():
        if isinstance(m, _FLOAT_TYPES):
            assert name in quantized or floats.get(name) or name.startswith(removed), \
                f"{name} ({type(m).__name__}) neither quantized nor explained"


def check_outputs(q: nn.Module, x: torch.Tensor, scale: int) -> torch.Tensor:
    with torch.no_grad():
        y = q(x)
    assert y.shape == (x.shape[0], 3, x.shape[2] * scale, x.shape[3] * scale)
    assert torch.isfinite(y).all()
    return y


def check_roundtrip(q: nn.Module, fresh: nn.Module, folder, x: torch.Tensor, savable: bool) -> None:
    if not savable:
        with pytest.raises(SrqError) as e:
            srq.save(q, folder)
        assert "\n" not in str(e.value)
        return
    srq.save(q, folder)
    loaded = srq.load(folder, model=fresh)
    assert placement(loaded) == placement(q)
    with torch.no_grad():
        expected, got = q(x), loaded(x)
        assert got.is_contiguous() and expected.is_contiguous()
        assert torch.equal(got, expected)
        # and in channels-last: both models and the input converted
        cl = torch.channels_last
        expected = copy.deepcopy(q).to(memory_format=cl)(x.contiguous(memory_format=cl))
        got = copy.deepcopy(loaded).to(memory_format=cl)(x.contiguous(memory_format=cl))
        assert torch.equal(got, expected)
    check_packed(q, fresh, folder, x)


def check_packed(q: nn.Module, fresh: nn.Module, folder, x: torch.Tensor) -> None:
    """The run folder packs (weights as n-bit integers) and unpacks to the same outputs, or the packer says in one
    line why it cannot (a grid without an integer form, e.g. DoReFa's weights)."""
    from srq.export.packed import load_packed, save_packed

    path = folder.parent / "run.safetensors"
    try:
        save_packed(q, folder, path)
    except SrqError as e:
        assert "\n" not in str(e) and not path.exists()
        return
    unpacked = load_packed(path, model=fresh)
    with torch.no_grad():
        assert torch.equal(unpacked(x), q(x))


# ---- the matrix ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, method", list(_matrix()))
def test_arch_method(arch, method, hr_folder, tmp_path):
    fp, scale = build(arch)
    recipe = tiny_recipe(method, scale, hr_folder)
    calib = calib_for(scale)
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    if arch in INPLACE_ARCHS and method in TRAINING:
        with pytest.raises(SrqError) as e:
            srq.quantize(fp, recipe, calib, progress=False)
        message = str(e.value)  # one line that names the model and the in-place operator
        assert "\n" not in message and "in place" in message and type(fp).__name__ in message
        assert "(`*=`)" in message or "(`+=`)" in message
        return
    q = srq.quantize(fp, recipe, calib, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in fp.state_dict().items()), "the float model was modified"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in fp.modules()), "hooks left on the float model"
    assert type(recipe).from_dict(recipe.to_dict()) == recipe
    x = calib[:2]
    check_outputs(q, x, scale)
    check_placement(fp, q)
    check_roundtrip(q, build(arch)[0], tmp_path / "run", x, srq.methods.get_method(method).savable)


# ---- every zoo model through prepare → calibrate → save/load -------------------------------------------------------

ZOO_INPUT = {"mambair_light": 8}  # else 16: a multiple of SwinIR's window (8) and MambaIRv2's (16), no padding
ZOO_SLOW = {"edsr", "rdn",  # 40 M / 22 M parameters: writing and hashing the run folder takes seconds
            "mambair_color_dn", "mambair_jpeg_car", "mambairv2_color_dn", "mambairv2_jpeg_car"}  # 15–26 s each


def _zoo_cases():
    for name in srq.models.list_models():
        marks = [pytest.mark.slow] if name in ZOO_SLOW else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_zoo_cases()))
def test_zoo_model_minmax_roundtrip(name, tmp_path):
    scale = min(srq.models.get_model_info(name).scales)
    torch.manual_seed(0)
    fp = srq.create_model(name, scale, None).eval()
    size = ZOO_INPUT.get(name, 16)
    x = torch.rand(2, 3, size, size)
    if not any(isinstance(m, _FLOAT_TYPES) for m in fp.modules()):  # bicubic: nothing to quantize
        with pytest.raises(SrqError) as e:
            prepare(fp, srq.methods.MinMax(w_bits=4, a_bits=4).config(), x[:1])
        assert "\n" not in str(e.value)
        return
    q = prepare(copy.deepcopy(fp), srq.methods.MinMax(w_bits=4, a_bits=4).config(), x[:1])
    calibrate(q, [x], progress=False)
    check_outputs(q, x, scale)
    check_placement(fp, q)
    srq.save(q, tmp_path / "run")
    loaded = srq.load(tmp_path / "run")  # rebuilt from the registry
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))


# ---- targeted checks of issue 32's items on the synthetic models -----------------------------------------------------

def test_find_blocks_picks_the_residual_blocks_of_a_bsconv_net():
    """Item 2: the blocks are the five ResBlocks, not the ten BSConvs inside them."""
    assert find_blocks(BSConvNet(2)) == [f"body.{i}" for i in range(5)]


def test_find_blocks_in_a_sequential_residual_body():
    model, _ = build("seq_resblocks")
    assert find_blocks(model) == [f"body.{i}" for i in range(3)]


def test_separable_stem_layers_are_both_first_at_8_bit():
    """Item 7: the depthwise 3×3 after the 1×1 stem conv is part of the first layer (data flow, not module order)."""
    fp, scale = build("separable_stem")
    q = prepare(fp, srq.methods.MinMax(w_bits=4, a_bits=4).config(), torch.rand(1, 3, PATCH, PATCH))
    roles = {e.name: (e.role, e.w_bits, e.a_bits) for e in placement(q)}
    assert roles["stem_pw"] == ("first", 8, 8)
    assert roles["stem_dw"] == ("first", 8, 8)


def test_last_layer_follows_data_flow_not_module_order():
    fp, _ = build("separable_stem")  # its tail is registered before its stem
    q = prepare(fp, srq.methods.MinMax(w_bits=4, a_bits=4).config(), torch.rand(1, 3, PATCH, PATCH))
    roles = {e.name: e.role for e in placement(q)}
    assert roles["tail.0"] == "last" and roles["body.0"] == "body"


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A one-image benchmark folder (48-pixel HR)."""
    folder = tmp_path_factory.mktemp("set")
    write_image(folder / "img.png", np.ascontiguousarray(sample_images("test")[0][1][:48, :48]))
    return folder


def test_evaluate_leaves_the_model_in_its_memory_format(tiny_set):
    """Item 5: evaluate() must not switch the caller's model to channels-last in place."""
    fp, scale = build("pixel_attention")
    q = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), calib_for(scale), progress=False)
    x = calib_for(scale)
    with torch.no_grad():
        before = q(x)
    evaluate(q, [str(tiny_set)], scale, progress=False)
    assert all(p.is_contiguous() for p in q.parameters())
    with torch.no_grad():
        assert torch.equal(q(x), before)


def test_srq_evaluate_is_the_documented_top_level_verb(tiny_set):
    """docs/byo_model.md: "srq.evaluate(model, ["Set5", "Urban100"], scale=4) does the same"."""
    fp, scale = build("grouped")
    scores = srq.evaluate(fp, [str(tiny_set)], scale=scale, progress=False)
    assert len(scores) == 1 and np.isfinite(scores[0].psnr)


def test_outputs_do_not_depend_on_the_memory_format():
    """Item 5: a quantized model gives the same output on a contiguous and on a channels-last input."""
    fp, scale = build("seq_resblocks")
    q = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), calib_for(scale), progress=False)
    x = calib_for(scale)
    with torch.no_grad():
        a = q(x)
        b = q(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(a, b)


def test_fine_tuning_that_makes_the_model_worse_is_not_returned_silently():
    """Item 4: a fine-tuning stage that raises its own objective either keeps the start or says so."""
    fp, scale = build("seq_resblocks")
    calib = calib_for(scale)
    plain = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4), calib, progress=False)
    wild = FinetuneConfig(lr=10.0, steps=3, batch=2, lambda_feat=0.0)  # the objective is the L1 to the FP output
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = srq.quantize(fp, srq.methods.MinMax(w_bits=4, a_bits=4, fine_tune=True, finetune_config=wild),
                             calib, progress=False)
    with torch.no_grad():
        target = fp(calib)
        worse = F.l1_loss(tuned(calib), target) > F.l1_loss(plain(calib), target)
    said = [w for w in caught if "worse" in str(w.message)]
    assert not worse or said
    assert all("\n" not in str(w.message) for w in said)


def test_multihead_attention_projection_is_not_reported_idle():
    fp, _ = build("multihead_attention")
    q = prepare(copy.deepcopy(fp), srq.methods.MinMax(w_bits=4, a_bits=4).config(), torch.rand(1, 3, PATCH, PATCH))
    reasons = {f.name: f.reason for f in float_layers(q)}
    assert "attn.out_proj" in reasons
    assert "did not run" not in reasons["attn.out_proj"]
    assert model_cost(q, PATCH, 2).idle_params == 0
