"""Tasks (srq.tasks): noise and JPEG inputs, scoring, calibration patches, FFDNet's σ map and odd sizes, the
MatConvNet reader, and the command line's task options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import srq
from srq.errors import SrqError
from srq.models.dncnn import DnCNN, FFDNet
from srq.models.matconvnet import read_matconvnet
from srq.tasks import JPEG, Denoise, TaskBenchmark, get_task, grey_uint8, jpeg_roundtrip, task_calibration_set

DATA = Path(__file__).parent / "data"


def _srq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srq.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "COLUMNS": "200"})


def _one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


# ---------------------------------------------------------------- noise


def test_noise_is_seeded_per_image_float32_and_unclipped():
    clean = np.zeros((32, 40, 3), np.uint8)
    clean[:, 20:] = 255
    task = Denoise(sigma=25)
    a, b = task.degrade_image(clean, "img_001"), task.degrade_image(clean, "img_001")
    assert a.dtype == np.float32 and a.shape == clean.shape
    assert np.array_equal(a, b)  # the same noise for every method and run
    assert not np.array_equal(a, task.degrade_image(clean, "img_002"))  # each image its own
    assert not np.array_equal(a, Denoise(sigma=25, seed=1).degrade_image(clean, "img_001"))
    assert a.min() < -0.05 and a.max() > 1.05  # not clipped to [0, 1]
    noise = (a - clean.astype(np.float32) / 255) * 255
    assert abs(noise.std() - 25) < 1.0 and abs(noise.mean()) < 0.5
    # the documented generator: PCG64(SeedSequence([seed, crc32(name)])), float64 normals scaled by σ/255
    import zlib

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([0, zlib.crc32(b"img_001")])))
    expected = clean.astype(np.float32) / 255 + (rng.standard_normal(clean.shape) * 25 / 255).astype(np.float32)
    assert np.array_equal(a, expected)


def test_denoise_scores_rgb_without_crop():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = clean.copy()
    out[0, 0, 2] ^= 8  # one value of one channel, in the border: counted
    psnr, _ = Denoise(25).score(out, clean)
    assert psnr == pytest.approx(10 * np.log10(255 ** 2 / (64 / clean.size)))


def test_bad_task_parameters_are_one_line():
    with pytest.raises(SrqError, match="--quality is not a parameter of the denoise task"):
        get_task("denoise", quality=10)
    with pytest.raises(SrqError, match="unknown task"):
        get_task("deblur")
    with pytest.raises(SrqError, match="sigma must be"):
        Denoise(sigma=-1)
    with pytest.raises(SrqError, match="quality must be"):
        JPEG(quality=0)


# ---------------------------------------------------------------- JPEG


@pytest.mark.parametrize("quality", [10, 40])
def test_jpeg_roundtrip_matches_fixture(quality):
    card = np.asarray(Image.open(DATA / "jpeg" / "card.png"))
    expected = np.asarray(Image.open(DATA / "jpeg" / f"card_q{quality}.png"))
    assert np.array_equal(jpeg_roundtrip(card, quality), expected)
    inp = JPEG(quality).degrade_image(np.repeat(card[..., None], 3, axis=2), "card")
    assert inp.dtype == np.uint8 and np.array_equal(inp[..., 0], expected) and np.array_equal(inp[..., 2], expected)


def test_jpeg_grey_of_colour_is_matlab_y_rounded():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    y = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255
    assert np.array_equal(grey_uint8(rgb), np.floor(y + 0.5).astype(np.uint8))
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    assert np.array_equal(grey_uint8(grey), rgb[..., 0])  # a grey image is used as it is, not mapped to [16, 235]


def test_evaluate_identity_model_gives_the_degradation_psnr(tmp_path):
    folder = tmp_path / "Mini"
    folder.mkdir()
    card = np.asarray(Image.open(DATA / "jpeg" / "card.png"))
    Image.fromarray(card).save(folder / "card.png")
    identity = torch.nn.Identity()
    jpeg = srq.evaluate(identity, [str(folder)], scale=1, task=JPEG(10), progress=False)[0]
    q10 = np.asarray(Image.open(DATA / "jpeg" / "card_q10.png")).astype(np.float64)
    mse = np.mean((q10 - card) ** 2)
    assert jpeg.psnr == pytest.approx(10 * np.log10(255 ** 2 / mse))
    noisy = srq.evaluate(identity, [str(folder)], scale=1, task=Denoise(15), progress=False)[0]
    assert 24 < noisy.psnr < 26.5  # σ 15 noise, clipped and rounded by the output protocol
    with pytest.raises(SrqError, match="scale 1"):
        srq.evaluate(identity, [str(folder)], scale=2, task=JPEG(10), progress=False)


def test_task_benchmark_and_calibration_patches(tmp_path):
    folder = tmp_path / "clean"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 40, (50, 60, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
    Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / "small.png")
    task = Denoise(25, calib_sigma=(0, 55))
    a = task_calibration_set(task, [folder], patch=32, n=2)
    b = task_calibration_set(task, [folder], patch=32, n=2)
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.float32 and torch.equal(a, b)
    assert a.min() < 0  # dark patches with noise: unclipped
    assert task_calibration_set(task, [folder], patch=32, n=None).shape[0] == 3  # the small image is skipped
    j = task_calibration_set(JPEG(10), [folder], patch=32, n=3)
    assert torch.equal(j[:, 0], j[:, 1]) and (j * 255 == (j * 255).round()).all()
    sample = TaskBenchmark(folder, JPEG(20))[0]
    assert sample.lr.shape == sample.hr.shape == (50, 60, 3)


# ---------------------------------------------------------------- FFDNet


def _ffdnet_reference(net: FFDNet, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """FFDNet written out: pad to even (replicate), unshuffle by hand, σ map, convs, shuffle, crop."""
    n, c, h, w = x.shape
    xp = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    H, W = xp.shape[-2:]
    y = xp.view(n, c, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, H // 2, W // 2)
    y = torch.cat([y, torch.full((n, 1, H // 2, W // 2), sigma / 255)], dim=1)
    z = net.model(y)
    out = z.view(n, c, 2, 2, H // 2, W // 2).permute(0, 1, 4, 2, 5, 3).reshape(n, c, H, W)
    return out[..., :h, :w]


@pytest.mark.parametrize("size", [(16, 20), (15, 20), (16, 21), (17, 19)])
def test_ffdnet_sigma_map_and_odd_sizes(size):
    torch.manual_seed(0)
    net = FFDNet(3, channels=8, convs=3, sigma=30).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
        assert out.shape == x.shape
        assert torch.allclose(out, _ffdnet_reference(net, x, 30), atol=1e-6)
        seen = []
        handle = net.model[0].register_forward_hook(lambda m, inp, o: seen.append(inp[0]))
        net(x)
        handle.remove()
        assert torch.all(seen[0][:, -1] == torch.tensor(30 / 255))  # the σ map, constant σ/255
        net.sigma = 10
        assert not torch.allclose(net(x), out)  # the noise level changes the output


def test_ffdnet_sigma_is_a_recorded_keyword_and_set_by_the_task():
    from srq.cli_tasks import task_arch

    model = srq.create_model("ffdnet_color", 1, None, sigma=50)
    assert model.sigma == 50 and model.srq_spec["arch"] == {"sigma": 50}
    assert task_arch("ffdnet_color", Denoise(15), []) == ["sigma=15.0"]
    assert task_arch("ffdnet_color", Denoise(15), ["sigma=20"]) == ["sigma=20"]  # -a wins
    assert task_arch("cdncnn_b", Denoise(15), []) == []


# ---------------------------------------------------------------- MatConvNet


def _mat_text(s: str) -> np.ndarray:
    return np.array([ord(ch) for ch in s], np.uint16).reshape(-1, 1)


def write_simplenn(path: Path, layers: list[tuple[str, list[np.ndarray]]], top: str = "net") -> None:
    """A MATLAB v7.3-style file (512-byte user block, #refs# group, net.layers cell of structs)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        cells = []
        for j, (kind, weights) in enumerate(layers):
            g = refs.create_group(f"L{j}")
            g.create_dataset("type", data=_mat_text(kind))
            if weights:
                wr = [refs.create_dataset(f"L{j}w{i}", data=w).ref for i, w in enumerate(weights)]
                g.create_dataset("weights", data=np.array(wr, dtype=h5py.ref_dtype).reshape(-1, 1))
                if kind == "conv":
                    g.create_dataset("stride", data=np.ones((1, 1)))
                    g.create_dataset("pad", data=np.ones((1, 1)))
            cells.append(g.ref)
        f.create_group(top).create_dataset("layers", data=np.array(cells, dtype=h5py.ref_dtype).reshape(-1, 1))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, written by a test")


def _matlab_view(w: torch.Tensor) -> np.ndarray:
    """torch (out, in, kh, kw) → what h5py shows of MATLAB's [kh, kw, in, out]: (out, in, kw, kh), leading
    singleton axes dropped (MATLAB drops trailing ones)."""
    arr = w.numpy().transpose(0, 1, 3, 2)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return np.ascontiguousarray(arr)


def test_matconvnet_reader_axes_and_bnorm_folding(tmp_path):
    torch.manual_seed(0)
    c1 = torch.nn.Conv2d(1, 4, 3, padding=1)
    c2 = torch.nn.Conv2d(4, 1, 3, padding=1)
    g, beta = torch.rand(4) + 0.5, torch.randn(4)
    mean, std = torch.randn(4), torch.rand(4) + 0.5
    layers = [("conv", [_matlab_view(c1.weight.detach()), c1.bias.detach().numpy().reshape(1, -1)]),
              ("bnorm", [g.numpy().reshape(1, -1), beta.numpy().reshape(1, -1),
                         np.stack([mean.numpy(), std.numpy()])]),
              ("relu", []),
              ("conv", [_matlab_view(c2.weight.detach()), c2.bias.detach().numpy().reshape(1, -1)])]
    path = tmp_path / "net.mat"
    write_simplenn(path, layers)
    state = read_matconvnet(path)
    assert sorted(state) == ["model.0.bias", "model.0.weight", "model.2.bias", "model.2.weight"]
    assert state["model.2.weight"].shape == (1, 4, 3, 3)
    net = DnCNN(1, channels=4, convs=2)
    net.load_state_dict(state)
    x = torch.rand(1, 1, 9, 7)  # not square: a kh/kw swap would show
    with torch.no_grad():
        h = F.relu(g.view(1, -1, 1, 1) * (c1(x) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
                   + beta.view(1, -1, 1, 1))
        assert torch.allclose(net(x), x - c2(h), atol=1e-5)


@pytest.mark.parametrize("case", ["pool layer", "no net", "not hdf5"])
def test_matconvnet_reader_refuses_unexpected_files_in_one_line(tmp_path, case):
    path = tmp_path / "bad.mat"
    conv = [np.zeros((64, 1, 3, 3), np.float32), np.zeros((1, 64), np.float32)]
    if case == "pool layer":
        write_simplenn(path, [("conv", conv), ("pool", [])])
        match = "unexpected structure: layer 2 has type 'pool'"
    elif case == "no net":
        write_simplenn(path, [("conv", conv)], top="model")
        match = "no net.layers"
    else:
        path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
        match = "not a MATLAB v7.3"
    with pytest.raises(SrqError, match=match) as err:
        read_matconvnet(path)
    assert "\n" not in str(err.value)
    out = tmp_path / "x.safetensors"
    _one_line_error(_srq("convert", "dncnn3", "--scale", "1", "--weights", str(path), "-o", str(out)), "bad.mat")
    assert not out.exists()


def test_dncnn3_official_mat_converts_to_identical_safetensors(weights_dir, tmp_path):
    mat = weights_dir / "dncnn3.mat"
    if not mat.is_file():
        pytest.skip("dncnn3.mat not in the weights folder")
    out = tmp_path / "dncnn3.safetensors"
    proc = _srq("convert", "dncnn3", "--scale", "1", "--weights", str(mat), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    a = srq.create_model("dncnn3", 1, mat)
    b = srq.create_model("dncnn3", 1, out)
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert torch.equal(a(x)[:, 0], a(x)[:, 2])  # a grey model: one output in all three channels


# ---------------------------------------------------------------- command line


def test_cli_task_option_errors():
    _one_line_error(_srq("eval", "dncnn3", "--task", "denoise", "--quality", "10"),
                    "--quality is not a parameter of the denoise task")
    _one_line_error(_srq("eval", "dncnn3", "--task", "jpeg", "--scale", "2"), "scale 1")
    _one_line_error(_srq("eval", "cdncnn_b", "--task", "blur"), "unknown task 'blur'")


def test_cli_quantize_and_eval_a_denoiser(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 26, 3), dtype=np.uint8)).save(clean / f"c{i}.png")
    model = tmp_path / "tiny.py"
    model.write_text("from srq.models.dncnn import DnCNN\n\ndef build():\n    return DnCNN(3, channels=8, convs=3)\n")
    run = tmp_path / "run"
    proc = _srq("quantize", f"{model}:build", "--task", "denoise", "--sigma", "30", "--method", "minmax", "--bits",
                "w8a8", "--calib", f"hr:{clean}", "--calib-n", "2", "--patch", "16", "-o", str(run))
    assert proc.returncode == 0, proc.stderr
    import json

    meta = json.loads((run / "srq.json").read_text())
    assert meta["task"] == {"task": "denoise", "sigma": 30.0, "seed": 0}
    assert meta["calibration"]["degraded_by"]["sigma"] == 30.0
    res = tmp_path / "r.json"
    proc = _srq("eval", str(run), "--model-code", f"{model}:build", "--datasets", str(clean), "-o", str(res))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(res.read_text())
    assert doc["task"]["sigma"] == 30.0 and doc["protocol"]["crop_border"] == 0  # the run's task by default
    qat = tmp_path / "qat"  # a QAT method: trained on the clean folder degraded by the task
    proc = _srq("quantize", f"{model}:build", "--task", "denoise", "--sigma", "30", "--method", "lsq", "--bits",
                "w4a4", "--calib", f"hr:{clean}", "--calib-n", "2", "--patch", "16", "--train-data", str(clean),
                "-p", "train.iterations=2", "-p", "train.batch=2", "-p", "train.hr_patch=16", "-p",
                f"train.val_set={clean}", "-p", "cache_dir=", "-o", str(qat))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((qat / "srq.json").read_text())
    assert meta["recipe"]["task"] == {"task": "denoise", "sigma": 30.0, "seed": 0}


# ---------------------------------------------------------------- every PTQ method, no per-task code


def _small_denoiser(tmp_path) -> tuple[torch.nn.Module, Path]:
    """A 4-layer, 8-channel CDnCNN (random weights, seed 0) and a folder of three 30×30 random clean images."""
    torch.manual_seed(0)
    folder = tmp_path / "clean"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
    return srq.create_model("cdncnn_b", 1, None, channels=8, convs=4), folder


def _ptq_methods() -> list[str]:
    from srq.methods.registry import list_methods

    return [m.name for m in list_methods() if not hasattr(m.create(w_bits=4, a_bits=4), "train_data")]


@pytest.mark.parametrize("method", _ptq_methods())
def test_every_ptq_method_quantizes_a_denoiser_on_task_calibration(method, tmp_path):
    from srq.methods.base import apply_params, tunable_params
    from srq.methods.registry import get_method

    net, folder = _small_denoiser(tmp_path)
    calib = task_calibration_set(Denoise(25, calib_sigma=(0, 55)), [folder], patch=24, n=3)
    recipe = get_method(method).create(w_bits=4, a_bits=4)
    small = [f"{k}=2" for k in tunable_params(recipe) if k.split(".")[-1] in ("iterations", "epochs", "steps",
                                                                                "osrc_iterations", "batch")]
    qmodel = srq.quantize(net, apply_params(recipe, small), calib, progress=False)
    score = srq.evaluate(qmodel, [str(folder)], scale=1, task=Denoise(25), progress=False)[0]
    assert np.isfinite(score.psnr) and len(score.images) == 3


def _qat_methods() -> list[str]:
    from srq.methods.registry import list_methods

    return [m.name for m in list_methods() if hasattr(m.create(w_bits=4, a_bits=4), "train_data")]


@pytest.mark.filterwarnings("ignore:.*(collapsed|budget|made the model worse|passes its input)")  # 2 steps, tiny model
@pytest.mark.parametrize("method", _qat_methods())
def test_every_qat_method_trains_a_denoiser_on_the_tasks_pairs(method, tmp_path):
    from srq.engine.qat import QATConfig
    from srq.methods.registry import get_method

    net, folder = _small_denoiser(tmp_path)
    task = Denoise(25)
    calib = task_calibration_set(task, [folder], patch=24, n=3)
    recipe = get_method(method).create(w_bits=4, a_bits=4, task=task.to_dict(), train_data=(str(folder),),
                                       cache_dir="", train=QATConfig(iterations=2, batch=2, hr_patch=24,
                                                                     val_set=str(folder)))
    qmodel = srq.quantize(net, recipe, calib, progress=False)
    training = srq.api.current_report(qmodel)["training"]
    assert training["data"]["targets"] == "clean images" and training["data"]["task"]["sigma"] == 25
    psnr = srq.evaluate(qmodel, [str(folder)], scale=1, task=task, progress=False)[0].psnr
    assert np.isfinite(psnr) and training["best"]["psnr"] is not None  # validated by the task's protocol


def test_input_psnr_is_the_degraded_inputs_own_score(tmp_path):
    """What a pass-through model scores: JPEG inputs as they are, noisy inputs clamped and rounded like an output."""
    from srq.engine.evaluate import input_psnr
    from srq.tasks.data import TaskBenchmark

    _, folder = _small_denoiser(tmp_path)
    for task in (Denoise(25), get_task("jpeg", quality=10)):
        data = TaskBenchmark(str(folder), task)
        by_hand = []
        for i in range(len(data)):
            s = data[i]
            out = s.lr if s.lr.dtype == np.uint8 else np.rint(np.clip(s.lr, 0, 1) * 255).astype(np.uint8)
            by_hand.append(task.score(out, s.hr)[0])
        assert input_psnr(str(folder), task) == pytest.approx(np.mean(by_hand), abs=1e-9)
        assert input_psnr(str(folder), task, images=1) == pytest.approx(by_hand[0], abs=1e-9)


def test_qat_warns_when_a_restorer_passes_its_input_through(tmp_path):
    """A residual denoiser whose residual is zero outputs its input: QAT records the inputs' own PSNR and says so."""
    from srq.engine.qat import QATConfig

    net, folder = _small_denoiser(tmp_path)
    with torch.no_grad():
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.zero_()
        last.bias.zero_()
    task = Denoise(25)
    calib = task_calibration_set(task, [folder], patch=24, n=3)
    recipe = srq.methods.LSQ(w_bits=8, a_bits=8, task=task.to_dict(), train_data=(str(folder),), cache_dir="",
                             train=QATConfig(iterations=1, batch=2, hr_patch=24, lr=1e-12, quant_lr=1e-12,
                                             val_set=str(folder)))
    with pytest.warns(UserWarning, match="passes its input through"):
        qmodel = srq.quantize(net, recipe, calib, progress=False)
    training = srq.api.current_report(qmodel)["training"]
    assert training["input_psnr"] == pytest.approx(training["best"]["psnr"], abs=0.02)


def test_qat_of_a_restoration_model_without_its_task_is_one_clear_error(tmp_path):
    from srq.engine.qat import QATConfig
    from srq.methods.registry import get_method

    net, folder = _small_denoiser(tmp_path)
    calib = task_calibration_set(Denoise(25), [folder], patch=24, n=3)
    recipe = get_method("lsq").create(w_bits=4, a_bits=4, train_data=(str(folder),), cache_dir="",
                                      train=QATConfig(iterations=2, batch=2, hr_patch=24, val_set=""))
    with pytest.raises(SrqError, match=r"scale 1.*--task denoise\|jpeg"):
        srq.quantize(net, recipe, calib, progress=False)


def test_lr_only_qat_of_a_restoration_model_distils_on_its_inputs(tmp_path):
    from srq.engine.qat import QATConfig
    from srq.methods.registry import get_method

    net, folder = _small_denoiser(tmp_path)
    calib = task_calibration_set(Denoise(25), [folder], patch=24, n=3)
    recipe = get_method("lsq").create(w_bits=4, a_bits=4, train_data=(str(folder),), cache_dir="", lr_only=True,
                                      train=QATConfig(iterations=2, batch=2, hr_patch=24, val_set=""))
    qmodel = srq.quantize(net, recipe, calib, progress=False)
    assert srq.api.current_report(qmodel)["training"]["data"]["targets"] == "FP model outputs"
