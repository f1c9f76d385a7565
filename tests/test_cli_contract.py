"""The command line's error contract, through the installed ``srq`` console script.

Every user mistake — unknown or missing option, wrong type, bad value, bad path — ends with exactly one
``error:`` line on stderr (after typer's usage line for parsing mistakes), no traceback, exit code 2, and
nothing written; checks on outputs run before any model is loaded. Ctrl-C exits with 130 after one line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import console_script

NOWHERE = "/proc/srq-cannot-write-here"  # a folder no one can create files in, root included


def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "SRQ_WEIGHTS": "/nonexistent-weights"}
    return subprocess.run([console_script(), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    """Exit code 2, one ``error:`` line (usage lines allowed before it), no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    others = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("error:", "Usage:", "Try "))]
    assert len(errors) == 1 and not others, proc.stderr
    assert fragment.lower() in errors[0].lower(), errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("contract")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    existing_file = root / "existing.txt"
    existing_file.write_text("x")
    old_run = root / "old_run"
    old_run.mkdir()
    (old_run / "results.json").write_text("{}")
    (root / "folder.json").mkdir()
    return {"root": root, "images": images, "image": images / "im0.png", "file": existing_file, "old_run": old_run,
            "folder_json": root / "folder.json"}


# (name, argv, fragment of the error line); {images}, {image}, {file}, {old_run}, {folder_json}, {root} are filled in
CASES = [
    # unknown options, every command
    *[(f"{cmd}-unknown-option", [cmd, "--nonsense"], "no such option")
      for cmd in ("models", "eval", "upscale", "quantize", "demo", "train", "download", "convert")],
    # missing arguments / options
    ("eval-missing-model", ["eval"], "missing argument"),
    ("upscale-missing-output", ["upscale", "bicubic", "{image}"], "missing argument"),
    ("quantize-missing-scale", ["quantize", "imdn"], "missing option"),
    ("quantize-missing-output", ["quantize", "imdn", "--scale", "4"], "missing option"),
    ("convert-missing-weights", ["convert", "imdn", "--scale", "4", "-o", "x.safetensors"], "missing option"),
    ("train-missing-output", ["train"], "missing option"),
    ("eval-no-scale-for-a-name", ["eval", "bicubic", "--datasets", "{images}"], "--scale is required"),
    ("eval-neither-folder-nor-name", ["eval", "no_such_run", "--datasets", "{images}"],
     "neither a run folder nor a model name"),
    ("export-neither-folder-nor-name", ["export", "no_such_run", "-o", "m.onnx"], "srq models"),
    # wrong types
    ("eval-scale-not-a-number", ["eval", "imdn", "--scale", "abc"], "invalid value"),
    ("quantize-calib-n-not-a-number", ["quantize", "imdn", "-s", "4", "--calib-n", "x", "-o", "r"], "invalid value"),
    ("upscale-tile-not-a-number", ["upscale", "bicubic", "{image}", "o.png", "-s", "2", "--tile", "x"],
     "invalid value"),
    ("train-steps-not-a-number", ["train", "--steps", "many", "-o", "t.safetensors"], "invalid value"),
    ("quantize-param-wrong-type", ["quantize", "imdn", "-s", "4", "--method", "percentile_ft", "-p",
                                   "finetune_config.steps=1.5", "-o", "r"], "does not fit"),
    # bad values
    ("eval-negative-tile", ["eval", "bicubic", "-s", "2", "--datasets", "{images}", "--tile", "-5"], "--tile"),
    ("eval-tiny-tile", ["eval", "bicubic", "-s", "2", "--datasets", "{images}", "--tile", "3"], "--tile"),
    ("eval-negative-overlap", ["eval", "bicubic", "-s", "2", "--tile-overlap", "-1"], "invalid value"),
    ("eval-unknown-device", ["eval", "bicubic", "-s", "2", "--device", "tpu9"], "device"),
    ("eval-zero-threads", ["eval", "bicubic", "-s", "2", "--threads", "0"], "invalid value"),
    ("quantize-zero-patch", ["quantize", "imdn", "-s", "4", "--patch", "0", "-o", "r"], "--patch"),
    ("quantize-zero-calib-n", ["quantize", "imdn", "-s", "4", "--calib-n", "0", "-o", "r"], "--calib-n"),
    ("quantize-unknown-param", ["quantize", "imdn", "-s", "4", "-p", "nonsense=1", "-o", "r"], "key one of"),
    ("quantize-bad-bits", ["quantize", "imdn", "-s", "4", "--bits", "w9a9", "-o", "r"], "from 1 to 8"),
    ("quantize-resume-and-overwrite", ["quantize", "imdn", "-s", "4", "--resume", "--overwrite", "-o", "{old_run}"],
     "not both"),
    ("quantize-nothing-to-resume", ["quantize", "imdn", "-s", "4", "--resume", "-o", "{old_run}"],
     "nothing to resume"),
    ("models-no-match", ["models", "zz*"], "no model matches"),
    ("demo-bad-bits", ["demo", "--bits", "w9a9"], "from 1 to 8"),
    ("train-zero-steps", ["train", "--steps", "0", "-o", "t.safetensors"], "invalid value"),
    ("upscale-unknown-output-extension", ["upscale", "bicubic", "{image}", "out.xyz", "-s", "2"], "must end in"),
    ("upscale-existing-output", ["upscale", "bicubic", "{image}", "{image}", "-s", "2"], "--overwrite"),
    # bad paths (checked before the model: the weights root does not exist, so loading it would fail otherwise)
    ("eval-results-unwritable", ["eval", "imdn", "-s", "4", "-o", NOWHERE + "/r.json"], "cannot write"),
    ("eval-results-is-a-folder", ["eval", "imdn", "-s", "4", "-o", "{folder_json}"], "is a folder"),
    ("eval-results-bad-suffix", ["eval", "imdn", "-s", "4", "-o", "r.txt"], ".json or .csv"),
    ("eval-images-unwritable", ["eval", "imdn", "-s", "4", "--save-images", NOWHERE], "cannot write"),
    ("eval-missing-run-folder-model", ["eval", "{root}/nothing-here", "--datasets", "{images}"], "does not exist"),
    ("quantize-output-unwritable", ["quantize", "imdn", "-s", "4", "-o", NOWHERE], "cannot write"),
    ("quantize-output-is-a-file", ["quantize", "imdn", "-s", "4", "-o", "{file}"], "existing file"),
    ("quantize-output-exists", ["quantize", "imdn", "-s", "4", "-o", "{old_run}"], "--overwrite"),
    ("quantize-output-under-a-file", ["quantize", "imdn", "-s", "4", "-o", "{file}/run"], "is a file"),
    ("upscale-output-unwritable", ["upscale", "imdn", "{image}", NOWHERE + "/x.png", "-s", "4"], "cannot write"),
    ("upscale-missing-input", ["upscale", "imdn", "{root}/none.png", "o.png", "-s", "4"], "does not exist"),
    ("upscale-folder-to-a-file", ["upscale", "imdn", "{images}", "{file}", "-s", "4"], "existing file"),
    ("train-output-unwritable", ["train", "--steps", "1", "-o", NOWHERE + "/t.safetensors"], "cannot write"),
    ("train-output-bad-suffix", ["train", "--steps", "1", "-o", "t.pth"], ".safetensors"),
    ("convert-output-unwritable", ["convert", "imdn", "-s", "4", "--weights", "{file}", "-o",
                                   NOWHERE + "/w.safetensors"], "cannot write"),
]


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_and_exit_code_2(files, argv, fragment):
    args = [a.format(**files) for a in argv]
    before = sorted(p.name for p in files["root"].rglob("*"))
    proc = run(*args, cwd=files["root"])
    assert_user_error(proc, fragment)
    assert sorted(p.name for p in files["root"].rglob("*")) == before  # nothing written, nothing removed


def test_the_matrix_covers_every_command_and_kind():
    commands = {c[1][0] for c in CASES}
    assert commands == {"models", "eval", "upscale", "quantize", "demo", "train", "download", "convert", "export"}
    assert len(CASES) >= 50


def test_bare_srq_shows_the_help_as_a_usage_error():
    proc = run()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "quantize" in proc.stderr + proc.stdout


def test_version_and_parse_mistakes_answer_without_importing_torch():
    """``srq --version``, ``--help`` and option mistakes answer at once: neither ``srq`` nor its CLI imports torch."""
    import sys

    from srq import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"srq {__version__}", proc
    code = "import sys, srq.cli; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_damaged_run_folder_is_one_line(files, tmp_path):
    run_folder = tmp_path / "run"
    proc = run("quantize", "srq_tiny", "-s", "4", "--bits", "w8a8", "--calib", str(files["images"]),
               "--calib-n", "3", "--patch", "16", "-o", str(run_folder))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((run_folder / "srq.json").read_text())
    model_file = run_folder / "model.safetensors"
    assert meta["model_file"]["bytes"] == model_file.stat().st_size and len(meta["model_file"]["sha256"]) == 64
    data = model_file.read_bytes()
    for damage, fragment in [(data[: len(data) // 2], "bytes"), (data[:-1] + bytes([data[-1] ^ 1]), "SHA-256"),
                             (b"", "bytes"), (None, "missing")]:
        if damage is None:
            model_file.unlink()
        else:
            model_file.write_bytes(damage)
        proc = run("eval", str(run_folder), "--datasets", str(files["images"]))
        assert_user_error(proc, "damaged run folder")
        assert fragment in proc.stderr
    (run_folder / "srq.json").write_text("{not json")
    assert_user_error(run("eval", str(run_folder), "--datasets", str(files["images"])), "damaged")


def test_outputs_follow_the_umask(files, tmp_path):
    old = os.umask(0o022)
    try:
        run_folder = tmp_path / "run"
        proc = run("quantize", "srq_tiny", "-s", "4", "--bits", "w8a8", "--calib", str(files["images"]),
                   "--calib-n", "3", "--patch", "16", "-o", str(run_folder))
        assert proc.returncode == 0, proc.stderr
        proc = run("upscale", str(run_folder), str(files["image"]), str(tmp_path / "up.png"))
        assert proc.returncode == 0, proc.stderr
    finally:
        os.umask(old)
    assert stat.S_IMODE(run_folder.stat().st_mode) == 0o755
    for path in [*run_folder.iterdir(), tmp_path / "up.png"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_overwrite_replaces_the_whole_run_folder(files, tmp_path):
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "bitmap.svg").write_text("<svg/>")  # left by an earlier GBA run
    common = ["quantize", "srq_tiny", "-s", "4", "--bits", "w8a8", "--calib", str(files["images"]),
              "--calib-n", "3", "--patch", "16", "-o", str(run_folder)]
    assert_user_error(run(*common), "--overwrite")
    proc = run(*common, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in run_folder.iterdir()) == ["model.safetensors", "placement.txt", "srq.json"]


def test_upscale_a_folder_with_a_run_folder(files, tmp_path):
    run_folder = tmp_path / "run"
    assert run("quantize", "srq_tiny", "-s", "4", "--bits", "w8a8", "--calib", str(files["images"]), "--calib-n",
               "3", "--patch", "16", "-o", str(run_folder)).returncode == 0
    out = tmp_path / "up"
    proc = run("upscale", str(run_folder), str(files["images"]), str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    assert Image.open(out / "im0.png").size == (128, 128)
    assert_user_error(run("upscale", str(run_folder), str(files["images"]), str(out)), "--overwrite")
    assert run("upscale", str(run_folder), str(files["images"]), str(out), "--overwrite").returncode == 0
    assert_user_error(run("upscale", str(run_folder), str(files["image"]), str(tmp_path / "x.png"), "-s", "2"),
                      "x4 model")


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 300) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "finished before it could be interrupted: " + proc.stderr.read()
        assert time.monotonic() < deadline, "never got going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def _without_progress(stderr: str) -> list[str]:
    """stderr's lines but the progress lines a slow (loaded) machine prints off a terminal."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not re.match(r"^.+: \d+/\d+ \(\d+%\), ", ln)]


def _popen(*args: str) -> subprocess.Popen:
    """Start srq with Ctrl-C's default disposition: a test run started in the background by a non-interactive
    shell (``pytest &``, as CI may) inherits SIGINT ignored, and so would srq."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen([console_script(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_during_eval_exits_130(tmp_path):
    images = tmp_path / "big"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(images / f"b{i:02d}.png")
    saved = tmp_path / "sr"
    # small tiles make every image slow (about a second), so the run is surely mid-way when the first image is out
    proc = _popen("eval", "srq_tiny", "-s", "4", "--datasets", str(images), "--save-images", str(saved),
                  "--tile", "16", "-o", str(tmp_path / "r.json"))
    code, stderr = _interrupt_when(proc, lambda: saved.exists() and any(saved.rglob("*.png")))
    assert code == 130, stderr
    assert _without_progress(stderr) == ["interrupted"], stderr
    assert not (tmp_path / "r.json").exists()


def test_ctrl_c_during_quantize_exits_130_and_keeps_the_run_resumable(files, tmp_path):
    run_folder = tmp_path / "run"
    args = ["quantize", "srq_tiny", "-s", "4", "--method", "percentile_ft", "-p", "finetune_config.steps=100000",
            "--calib", str(files["images"]), "--calib-n", "3", "--patch", "16", "-o", str(run_folder)]
    proc = _popen(*args)
    code, stderr = _interrupt_when(proc, lambda: any((run_folder / ".srq-work").glob("stage-*.safetensors")))
    assert code == 130, stderr
    lines = _without_progress(stderr)
    assert len(lines) == 1 and lines[0].startswith("interrupted") and "--resume" in lines[0], stderr
    assert_user_error(run(*args), "--resume")
