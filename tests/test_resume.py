"""Resumable long stages: a run interrupted (or killed) and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import hashlib
import runpy
import signal
import subprocess
import sys
import time

import pytest
import torch

import srq
import srq.engine.distill as distill
from srq.engine.checkpoint import WorkArea, active_work_area, resumable
from srq.engine.distill import FinetuneConfig
from srq.errors import SrqError
from srq.methods import GBA, Percentile

FINGERPRINT = {"model": "srq_tiny", "scale": 4, "recipe": {"method": "percentile_ft", "steps": 12}, "threads": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """Runs compared need the same thread count; one keeps the tests quick on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    from srq.data.samples import sample_images

    return torch.stack([torch.from_numpy(img[:32, :32].copy()).permute(2, 0, 1).float() / 255
                        for _, img in sample_images("train")[:4]])


def _percentile(steps: int = 12) -> Percentile:
    return Percentile(w_bits=4, a_bits=4, fine_tune=True, finetune_config=FinetuneConfig(steps=steps, lr_min=1e-3))


def _gba() -> GBA:
    return GBA(w_bits=3, a_bits=3, init_batch=4, mp_weights=True, alloc=FinetuneConfig(lr=0.1, steps=6, lambda_feat=0),
               finetune_config=FinetuneConfig(steps=6))


def _quantize(recipe, calib, work: WorkArea | None = None) -> torch.nn.Module:
    with resumable(work):
        return srq.quantize(srq.create_model("srq_tiny", 4, "official"), recipe, calib, progress=False)


def _count_steps(monkeypatch, stop_after: int | None = None) -> list[int]:
    """Count the fine-tuning steps run (over all stages); raise KeyboardInterrupt once ``stop_after`` are done."""
    count = [0]

    def counting(items, **kw):
        for item in items:
            if count[0] == stop_after:
                raise KeyboardInterrupt
            count[0] += 1
            yield item

    monkeypatch.setattr(distill, "progress_bar", counting)
    return count


def _assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.mark.parametrize("recipe, stop_after, every, redone", [
    (_percentile, 7, 5, 7),  # one stage of 12 steps, stopped after 7: resumes at step 5
    (_gba, 10, 3, 9),  # stages of 6 (a), 6 (w), 6 (bounds); stopped in the second: resumes there at step 3
])
def test_interrupted_run_resumes_bit_identical(tmp_path, monkeypatch, calib, recipe, stop_after, every, redone):
    reference = _quantize(recipe(), calib)
    count = _count_steps(monkeypatch, stop_after)
    with pytest.raises(KeyboardInterrupt):
        _quantize(recipe(), calib, WorkArea.open(tmp_path / "work", FINGERPRINT, resume=False, every_steps=every))
    assert count[0] == stop_after
    count[0] = 0
    resumed = _quantize(recipe(), calib, WorkArea.open(tmp_path / "work", FINGERPRINT, resume=True, every_steps=every))
    assert count[0] == redone  # completed stages and checkpointed steps are not run again
    _assert_identical(resumed, reference)
    assert getattr(resumed, "srq_report", None) == getattr(reference, "srq_report", None)  # GBA: same allocation


def test_resume_of_a_complete_run_trains_nothing(tmp_path, monkeypatch, calib):
    work = WorkArea.open(tmp_path / "work", FINGERPRINT, resume=False)
    first = _quantize(_percentile(), calib, work)
    count = _count_steps(monkeypatch)
    again = _quantize(_percentile(), calib, WorkArea.open(tmp_path / "work", FINGERPRINT, resume=True))
    assert count[0] == 0
    _assert_identical(again, first)
    work.remove()
    assert not (tmp_path / "work").exists()


def test_resumable_sets_the_active_work_area(tmp_path):
    work = WorkArea.open(tmp_path / "work", FINGERPRINT, resume=False)
    assert active_work_area() is None
    with resumable(work):
        assert active_work_area() is work
    assert active_work_area() is None
    assert (tmp_path / "work" / "fingerprint.json").is_file()


def test_refusals(tmp_path, monkeypatch, calib):
    with pytest.raises(SrqError, match="nothing to resume"):
        WorkArea.open(tmp_path / "none", FINGERPRINT, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SrqError, match="not an srq work folder"):
        WorkArea.open(tmp_path / "other", FINGERPRINT, resume=False)
    WorkArea.open(tmp_path / "work", FINGERPRINT, resume=False)
    changed = {**FINGERPRINT, "recipe": {**FINGERPRINT["recipe"], "steps": 13}, "threads": 4}
    with pytest.raises(SrqError, match=r"settings differ .*\(recipe\.steps, threads\)"):
        WorkArea.open(tmp_path / "work", changed, resume=True)

    _count_steps(monkeypatch, stop_after=7)
    with pytest.raises(KeyboardInterrupt):
        _quantize(_percentile(), calib, WorkArea.open(tmp_path / "work", FINGERPRINT, resume=False, every_steps=5))
    with pytest.raises(SrqError, match="fine-tuning' \\(12 steps\\), this run's is 'fine-tuning' \\(10 steps\\)"):
        _quantize(_percentile(steps=10), calib, WorkArea.open(tmp_path / "work", FINGERPRINT, resume=True))
    stage = tmp_path / "work" / "stage-000.safetensors"
    stage.write_bytes(stage.read_bytes()[:-100])
    with pytest.raises(SrqError, match="damaged checkpoint .*--overwrite"):
        _quantize(_percentile(), calib, WorkArea.open(tmp_path / "work", FINGERPRINT, resume=True))


SCRIPT = """
import sys, torch
import srq
from srq.data.samples import sample_calibration
from srq.engine.checkpoint import WorkArea, resumable
from srq.engine.distill import FinetuneConfig

torch.set_num_threads(1)
out, resume = sys.argv[1], sys.argv[2] == "resume"
calib = sample_calibration(4, n=4, patch=32)
recipe = srq.methods.Percentile(w_bits=4, a_bits=4, fine_tune=True, finetune_config=FinetuneConfig(steps=40))
work = WorkArea.open(out + ".work", {"threads": 1}, resume=resume, every_steps=5)
with resumable(work):
    q = srq.quantize(srq.create_model("srq_tiny", 4, "official"), recipe, calib, progress=False)
srq.save(q, out)
work.remove()
"""


def test_kill_9_and_resume(tmp_path, monkeypatch):
    script, killed, work = tmp_path / "run.py", tmp_path / "killed", tmp_path / "killed.work"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "fresh"])
    try:
        deadline = time.monotonic() + 120
        while not (work / "stage-000.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.kill()  # SIGKILL
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not killed.exists()
    subprocess.run([sys.executable, str(script), str(killed), "resume"], check=True, timeout=120)
    assert not work.exists()
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "straight"), "fresh"])
    runpy.run_path(str(script))  # uninterrupted, in this process (one thread too)
    digests = {hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
               for folder in (killed, tmp_path / "straight")}
    assert len(digests) == 1
