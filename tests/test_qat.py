"""The QAT loop (srq.engine.qat) and the QAT baseline methods on srq's tiny model: training helps, schedules,
best-state keeping, bit-identical resume, data-parallel equivalence, configuration errors."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import srq
from srq.data import write_image
from srq.data.samples import sample_calibration, sample_images
from srq.data.training import TrainingSet
from srq.engine.checkpoint import WorkArea, resumable
from srq.engine.qat import QATConfig, train_qat
from srq.errors import ConfigError, SrqError
from srq.methods import LSQ, PAMS, DoReFa, LSQPlus
from srq.methods.base import Recipe
from srq.methods.qat import model_scale
from srq.quant import quantizers


@pytest.fixture(scope="module")
def fp():
    return srq.create_model("srq_tiny", 4, "official")


def _setup(fp, hr_folder, seed=0):
    """A calibrated LSQ W4A4 copy of ``fp``, its parameter groups and a training set (HR patch 32)."""
    recipe = LSQ(w_bits=4, a_bits=4)
    calib = sample_calibration(4)[:4]
    q = recipe.prepare(fp, calib[:1])
    srq.quant.calibrate(q, [calib], progress=False)
    quant = [p for _, m in quantizers(q) for p in m.parameters()]
    weights = [p for p in q.parameters() if all(p is not t for t in quant)]
    return q, weights, quant, TrainingSet(hr_folder, 4, 32, seed=seed)


def _state_bytes(model) -> bytes:
    return b"".join(v.detach().contiguous().numpy().tobytes() for v in model.state_dict().values())


def _l1(model, data, steps=(1000, 1001)) -> float:
    with torch.no_grad():
        return float(np.mean([torch.nn.functional.l1_loss(model(lr), hr).item()
                              for lr, hr in (data.batch(s, 8) for s in steps)]))


def test_training_lowers_the_ground_truth_loss(fp, hr_folder):
    q, weights, quant, data = _setup(fp, hr_folder)
    before = _l1(q, data)
    record = train_qat(q, None, data, QATConfig(iterations=30, batch=4, hr_patch=32, lr=1e-3, quant_lr=1e-3),
                       weights=weights, quant_params=quant, progress=False)
    assert len(record["log"]) == 30 and record["steps_skipped"] == 0
    assert _l1(q, data) < 0.985 * before
    assert not q.training


def test_bf16_autocast_trains_a_float32_model(fp, hr_folder):
    q, weights, quant, data = _setup(fp, hr_folder)
    before = _l1(q, data)
    record = train_qat(q, None, data, QATConfig(iterations=30, batch=4, hr_patch=32, lr=1e-3, quant_lr=1e-3,
                                                precision="bf16"), weights=weights, quant_params=quant, progress=False)
    assert all(np.isfinite(r["loss"]) for r in record["log"])
    assert all(v.dtype in (torch.float32, torch.bool) for v in q.state_dict().values())
    assert _l1(q, data) < 0.985 * before


def test_bf16_on_a_cpu_without_native_bfloat16_warns(fp, hr_folder, monkeypatch):
    import srq.engine.qat as qat

    q, weights, quant, data = _setup(fp, hr_folder)
    monkeypatch.setattr(qat, "native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="without native bfloat16.*train.precision=fp32"):
        train_qat(q, None, data, QATConfig(iterations=1, batch=2, hr_patch=32, precision="bf16"),
                  weights=weights, quant_params=quant, progress=False)


def test_channels_last_training_matches_contiguous_and_puts_the_layout_back(fp, hr_folder):
    cfg = QATConfig(iterations=6, batch=2, hr_patch=32, lr=1e-3, quant_lr=1e-3)
    states = []
    for layout in ("contiguous", "channels_last"):
        q, weights, quant, data = _setup(fp, hr_folder)
        layouts = {n: p.is_contiguous() for n, p in q.named_parameters()}
        record = train_qat(q, fp, data, dataclasses.replace(cfg, memory_format=layout, lambda_out=1.0),
                           weights=weights, quant_params=quant, progress=False)
        assert {n: p.is_contiguous() for n, p in q.named_parameters()} == layouts  # as they were before
        assert all(p.is_contiguous() for p in fp.parameters())  # the teacher too
        states.append((q.state_dict(), [r["loss"] for r in record["log"]]))
    (a, losses_a), (b, losses_b) = states
    # the same function (first step), then trajectories that drift apart as convolutions sum in another order and
    # a few values round the other way: close, not bit-equal
    assert losses_b[0] == pytest.approx(losses_a[0], rel=1e-5)
    assert losses_b == pytest.approx(losses_a, rel=0.05) and losses_b[-1] < losses_b[0]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 0.02


def test_multistep_schedule_and_separate_learning_rates(fp, hr_folder):
    q, weights, quant, data = _setup(fp, hr_folder)
    cfg = QATConfig(iterations=8, batch=2, hr_patch=32, lr=1e-4, quant_lr=1e-2, milestones=(0.5, 0.75), gamma=0.1)
    record = train_qat(q, None, data, cfg, weights=weights, quant_params=quant, progress=False)
    assert [r["lr"] for r in record["log"]] == pytest.approx([1e-4] * 4 + [1e-5] * 2 + [1e-6] * 2)


def test_the_best_validated_state_is_kept(fp, hr_folder):
    q, weights, quant, data = _setup(fp, hr_folder)
    scores, states = iter([20.0, 30.0, 31.0, 29.0]), []  # the first: the state before training

    def validate(m):
        states.append(copy.deepcopy(m.state_dict()))
        return next(scores)

    record = train_qat(q, None, data, QATConfig(iterations=6, batch=2, hr_patch=32, lr=1e-3, validate_every=2),
                       weights=weights, quant_params=quant, validate=validate, progress=False)
    assert record["best"] == {"step": 4, "psnr": 31.0} and record["start_psnr"] == 20.0
    assert [r["psnr"] for r in record["log"]] == [None, 30.0, None, 31.0, None, 29.0]
    assert all(torch.equal(v, states[2][k]) for k, v in q.state_dict().items())


def test_training_that_never_beats_the_start_keeps_it_and_says_so(fp, hr_folder):
    q, weights, quant, data = _setup(fp, hr_folder)
    start = copy.deepcopy(q.state_dict())
    scores = iter([30.0, 25.0, 24.0])

    def validate(m):
        return next(scores)

    with pytest.warns(UserWarning, match=r"made the model worse on its validation set \(PSNR 30.00 dB before, "
                                         r"25.00 dB at best after\); kept the state before"):
        record = train_qat(q, None, data, QATConfig(iterations=4, batch=2, hr_patch=32, lr=1e-2, validate_every=2),
                           weights=weights, quant_params=quant, validate=validate, progress=False)
    assert record["best"] == {"step": 0, "psnr": 30.0}
    assert all(torch.equal(v, start[k]) for k, v in q.state_dict().items())


class _Killed(Exception):
    pass


class _KillAt:
    """Training data that raises at a given step (a kill -9 stand-in inside one process)."""

    def __init__(self, data, step):
        self.data, self.step = data, step

    def batch(self, step, *args):
        if step == self.step:
            raise _Killed
        return self.data.batch(step, *args)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_resume_after_an_interruption_is_bit_identical(fp, hr_folder, tmp_path, layout):
    cfg = QATConfig(iterations=7, batch=2, hr_patch=32, lr=1e-3, validate_every=3, memory_format=layout)
    validate = lambda m: -_l1(m, data)  # noqa: E731
    q, weights, quant, data = _setup(fp, hr_folder)
    whole = train_qat(q, None, data, cfg, weights=weights, quant_params=quant, validate=validate, progress=False)
    expected = _state_bytes(q)

    q, weights, quant, data = _setup(fp, hr_folder)
    work = WorkArea.open(tmp_path / "work", {"run": 1}, resume=False, every_steps=2)
    with pytest.raises(_Killed), resumable(work):
        train_qat(q, None, _KillAt(data, 5), cfg, weights=weights, quant_params=quant, validate=validate,
                  progress=False)
    q, weights, quant, data = _setup(fp, hr_folder)  # a new process: everything rebuilt
    work = WorkArea.open(tmp_path / "work", {"run": 1}, resume=True, every_steps=2)
    with resumable(work):
        resumed = train_qat(q, None, data, cfg, weights=weights, quant_params=quant, validate=validate,
                            progress=False)
    assert _state_bytes(q) == expected
    # the multistep decays at steps 3 and 5 straddle the checkpoint (step 4): the schedule resumes too
    assert [(r["loss"], r["lr"], r["psnr"]) for r in resumed["log"]] == \
        [(r["loss"], r["lr"], r["psnr"]) for r in whole["log"]]
    assert resumed["best"] == whole["best"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# SGD, not Adam: Adam divides each gradient by its own running size, so float noise in near-zero gradients becomes
# whole steps, and a bug that scales the gradients (a sum over ranks instead of a mean) would not show
DDP_CONFIG = QATConfig(iterations=4, batch=4, hr_patch=32, optimizer="sgd", lr=0.2, quant_lr=0.2)


def _ddp_worker(rank, world, port, hr_folder, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fp = srq.create_model("srq_tiny", 4, "official")
        q, weights, quant, data = _setup(fp, hr_folder)
        record = train_qat(q, None, data, DDP_CONFIG, weights=weights, quant_params=quant, progress=False)
        torch.save({"losses": [r["loss"] for r in record["log"]], "state": q.state_dict()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_train_like_one(fp, hr_folder, tmp_path):
    torch.set_num_threads(1)
    q, weights, quant, data = _setup(fp, hr_folder)
    one = train_qat(q, None, data, DDP_CONFIG, weights=weights, quant_params=quant, progress=False)
    mp.spawn(_ddp_worker, args=(2, _free_port(), hr_folder, tmp_path / "ddp.pt"), nprocs=2)
    ranks = [torch.load(tmp_path / f"ddp.pt.{r}") for r in range(2)]
    # each rank's loss is the mean over its half of the global batch: their mean is the 1-process loss
    losses = [r["loss"] for r in one["log"]]
    assert np.mean([r["losses"] for r in ranks], axis=0) == pytest.approx(losses, rel=1e-4)
    start = _setup(fp, hr_folder)[0].state_dict()
    assert max((v.float() - start[k].float()).abs().max().item() for k, v in q.state_dict().items()) > 1e-4
    for k, v in q.state_dict().items():  # and DDP's averaged gradients made the same model on every rank
        for r in ranks:
            assert torch.allclose(r["state"][k].float(), v.float(), atol=1e-5, rtol=1e-4), k


@pytest.mark.parametrize("cls", [LSQ, LSQPlus, PAMS, DoReFa])
def test_qat_methods_run_save_and_reload(cls, fp, hr_folder, tmp_path):
    recipe = cls(w_bits=4, a_bits=4, train_data=(str(hr_folder),), cache_dir="",
                 train=QATConfig(iterations=3, batch=2, hr_patch=32, val_set=""))
    q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    assert len(q.srq_report["training"]["log"]) == 3
    assert q.srq_report["training"]["data"]["images"] == 3
    srq.save(q, tmp_path / "run")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(x), q(x))
    assert srq.methods.base.Recipe.from_dict(recipe.to_dict()) == recipe


def test_lr_only_training_distils_from_the_fp_model(fp, tmp_path):
    for name, img in sample_images("train")[:2]:
        write_image(tmp_path / f"{name}.png", img[:64, :64])
    recipe = LSQ(w_bits=4, a_bits=4, train_data=(str(tmp_path),), lr_only=True,
                 train=QATConfig(iterations=3, batch=2, hr_patch=64, val_set=""))
    q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    data = q.srq_report["training"]["data"]
    assert data["targets"] == "FP model outputs" and data["images"] == 2
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in q.srq_report["training"]["log"])


def test_model_scale_from_spec_or_shapes(fp):
    assert model_scale(fp, torch.rand(1, 3, 8, 8)) == 4
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    assert model_scale(plain, torch.rand(1, 3, 20, 20)) == 2


@pytest.mark.parametrize("fields, says", [
    ({"iterations": 0}, "iterations"), ({"milestones": (0.8, 0.2)}, "milestones"), ({"schedule": "step"}, "schedule"),
    ({"lambda_gt": 0.0}, "nothing to train on"), ({"lr": 0.0}, "lr"), ({"keep": "first"}, "keep"),
])
def test_bad_configs_fail_at_construction(fields, says):
    with pytest.raises(ConfigError, match=says):
        QATConfig(**fields)


def test_missing_training_folder_is_one_line(fp):
    recipe = LSQ(train_data=("/no/such/folder",))
    with pytest.raises(SrqError, match="training folder /no/such/folder not found"):
        srq.quantize(fp, recipe, sample_calibration(4)[:2], progress=False)


def test_srq_quantize_under_torchrun_matches_one_process(hr_folder, tmp_path):
    """`torchrun --nproc_per_node 2 srq quantize --method lsq` (gloo): rank 0 writes the run folder; the model is
    the one-process model within float tolerance."""
    import shutil
    import subprocess
    import sys

    srq_script = shutil.which("srq") or pytest.skip("the srq console script is not installed")
    common = ["quantize", "srq_tiny", "--scale", "4", "--method", "lsq", "--train-data", str(hr_folder),
              "--calib", str(hr_folder), "--patch", "16", "--calib-n", "4", "--threads", "1",
              "-p", "train.iterations=4", "-p", "train.batch=4", "-p", "train.hr_patch=32", "-p", "train.optimizer=sgd",
              "-p", "train.lr=0.2", "-p", "train.quant_lr=0.2", "-p", "train.val_set="]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([srq_script, *common, "-o", str(tmp_path / "one")], check=True, env=env, capture_output=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), srq_script, *common, "-o", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    a, b = srq.load(tmp_path / "one").state_dict(), srq.load(tmp_path / "two").state_dict()
    for k, v in a.items():
        assert torch.allclose(b[k].float(), v.float(), atol=1e-5, rtol=1e-4), k
    assert json.loads((tmp_path / "two" / "srq.json").read_text())["world_size"] == 2


def test_lsq_init_starts_the_steps_from_the_ptq_ranges(fp):
    assert "init" not in LSQ().to_dict()  # the paper's LSQ hashes as before the option
    recipe = LSQ(w_bits=4, a_bits=4, init="percentile")
    d = recipe.to_dict()
    assert (d["w_observer"], d["a_observer"]) == ("minmax", "percentile") and Recipe.from_dict(d) == recipe
    assert (LSQ(init="omse").to_dict()["w_observer"], LSQ(init="omse").to_dict()["a_observer"]) == ("omse", "omse")
    with pytest.raises(ConfigError, match="init must be one of paper, percentile, omse"):
        LSQ(init="mean")
    calib = sample_calibration(4)[:4]
    q = recipe.prepare(fp, calib[:1])
    srq.quant.calibrate(q, [calib], progress=False)
    found = {(n.endswith("weight_quantizer"), m.mode, m.observer_name) for n, m in srq.quant.quantizers(q)}
    assert found == {(True, "lsq_range", "minmax"), (False, "lsq_range", "percentile")}
    weights = [(n, m) for n, m in srq.quant.quantizers(q) if n.endswith("weight_quantizer")]
    assert weights
    for n, m in weights:  # s = max(max w / Qp, −min w / Qn) per channel: the grid covers the channel's weights
        w = dict(fp.named_parameters())[n.rsplit(".", 1)[0] + ".weight"].detach().flatten(1)
        qp, qn = 2 ** (m.bits - 1) - 1, 2 ** (m.bits - 1)
        expected = torch.maximum(w.amax(1) / qp, -w.amin(1) / qn)
        torch.testing.assert_close(m.step.detach().flatten(), expected)


def test_lsq_plus_initialises_activations_by_mse(fp):
    """LSQ+'s "better initialization" is MSE-based: on activations with outliers its calibrated range is narrower
    than the min/max one (and LSQ's own init is unaffected)."""
    assert LSQPlus().to_dict()["a_observer"] == "omse" and LSQ().to_dict()["a_observer"] == "minmax"
    calib = sample_calibration(4)[:4]
    q = LSQPlus(w_bits=4, a_bits=4).prepare(fp, calib[:1])
    srq.quant.calibrate(q, [calib], progress=False)
    minmax = srq.quant.prepare(copy.deepcopy(fp), dataclasses.replace(LSQPlus(w_bits=4, a_bits=4).config(),
                                                                       a_observer="minmax"), calib[:1])
    srq.quant.calibrate(minmax, [calib], progress=False)
    spans = {n: m.grid.bounds({"step": m.step, "offset": m.offset}, 4) for n, m in srq.quant.quantizers(q)
             if m.mode == "lsqplus"}
    wide = {n: m.grid.bounds({"step": m.step, "offset": m.offset}, 4) for n, m in srq.quant.quantizers(minmax)
            if m.mode == "lsqplus"}
    assert spans and spans.keys() == wide.keys()
    narrower = [float(hi - lo) < float(whi - wlo) - 1e-6 for (lo, hi), (wlo, whi) in
                ((spans[n], wide[n]) for n in spans)]
    assert all(float(hi - lo) <= float(wide[n][1] - wide[n][0]) + 1e-6 for n, (lo, hi) in spans.items())
    assert any(narrower)
    weight_modes = {m.mode for n, m in srq.quant.quantizers(q) if n.endswith("weight_quantizer") and m.bits == 4}
    assert weight_modes == {"lsq_3sigma"}  # and the weights start from the paper's μ ± 3σ step


def test_lsq_plus_with_an_integer_zero_point_trains_saves_and_exports(fp, hr_folder, tmp_path):
    """``zero_point="integer"``: every LSQ+ activation quantizer is ``lsqplus_int`` (offset on the grid), the
    trained run reloads exactly and exports to integer ONNX; anything but float/integer fails at construction."""
    recipe = LSQPlus(w_bits=4, a_bits=4, zero_point="integer", train_data=(str(hr_folder),), cache_dir="",
                     train=QATConfig(iterations=3, batch=2, hr_patch=32, val_set=""))
    q = srq.quantize(fp, recipe, sample_calibration(4)[:4], progress=False)
    modes = {m.mode for n, m in srq.quant.quantizers(q) if not n.endswith("weight_quantizer")}
    assert modes == {"lsqplus_int"}
    for _, m in srq.quant.quantizers(q):
        if m.mode == "lsqplus_int":  # trained: whatever β learned, the levels stay integer multiples of the step
            with torch.no_grad():
                k = m(torch.randn(2, 4, 8, 8) * 3) / m.step
            assert (k - k.round()).abs().max() < 1e-4
    srq.save(q, tmp_path / "run")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(x), q(x))
    assert srq.methods.base.Recipe.from_dict(recipe.to_dict()) == recipe
    if importlib.util.find_spec("onnx") is not None:
        from srq.export import export_onnx

        export_onnx(q, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="zero_point"):
        LSQPlus(zero_point="int")
