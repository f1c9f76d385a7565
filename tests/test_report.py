"""``srq report``: gathering runs, the Pareto front, a self-contained page, the crop cache, one-line errors, and
the page rendered in headless Chromium (skipped where Chromium is not installed)."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srq
from srq.engine.evaluate import evaluate
from srq.engine.results import write_results
from srq.errors import SrqError
from srq.report.html import write_report
from srq.report.runs import gather_runs, pareto_front

from conftest import console_script


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour image (upsampled noise), so SR and bicubic differ less than on pure noise."""
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A data root with a 2-image "Set14", two MinMax run folders of srq_tiny (W4A4, W8A8) scored on it, an FP
    result file and a result file without a model."""
    tmp = tmp_path_factory.mktemp("report")
    sets = tmp / "data" / "benchmarks" / "Set14"
    sets.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("baboon", "barbara"):
        Image.fromarray(_smooth_image(rng, 96, 112)).save(sets / f"{name}.png")
    root = tmp / "data"
    torch.manual_seed(0)
    calib = torch.rand(4, 3, 24, 24)
    fp = srq.create_model("srq_tiny", 4, "official")
    runs = tmp / "runs"
    for bits in (4, 8):
        result = srq.pipeline.run(fp, srq.methods.MinMax(w_bits=bits, a_bits=bits), calib, name="srq_tiny", scale=4,
                                  output=runs / f"minmax_w{bits}a{bits}", datasets=["Set14"],
                                  eval_options={"data_root": root}, progress=False)
        write_results(runs / f"minmax_w{bits}a{bits}" / "eval.json", result.scores, {"model": "srq_tiny", "scale": 4})
    write_results(tmp / "fp.json", evaluate(fp, ["Set14"], 4, data_root=root, progress=False),
                  {"model": "srq_tiny", "scale": 4})
    doc = json.loads((tmp / "fp.json").read_text())
    doc.update(recipe={"method": "percentile", "w_bits": 3, "a_bits": 3}, quantize_seconds=12.0)
    for r in doc["results"]:
        r["psnr"] -= 2.0
    (tmp / "only_scores.json").write_text(json.dumps(doc))
    (tmp / "not_results.json").write_text(json.dumps({"speed": 1}))
    return {"tmp": tmp, "root": root, "runs": runs, "paths": [runs, tmp / "fp.json", tmp / "only_scores.json"]}


def test_pareto_front():
    points = [(1.0, 20.0), (2.0, 25.0), (2.0, 24.0), (3.0, 24.5), (4.0, 30.0), (0.5, 19.0), (4.0, 30.0)]
    assert pareto_front(points) == [5, 0, 1, 4, 6]  # (2, 24) and (3, 24.5) are beaten by (2, 25); ties kept
    assert pareto_front([]) == []


def test_gather_merges_and_labels(setup):
    runs, skipped = gather_runs(setup["paths"])
    labels = sorted(r.label for r in runs)
    assert labels == ["srq_tiny x4 FP32", "srq_tiny x4 minmax W4A4", "srq_tiny x4 minmax W8A8",
                      "srq_tiny x4 percentile W3A3"]
    w4 = next(r for r in runs if r.label.endswith("W4A4"))
    assert w4.folder is not None and "Set14" in w4.scores and set(w4.images["Set14"]) == {"baboon", "barbara"}
    assert w4.delta("Set14") is not None and w4.size_kb and w4.bitops and 4 <= w4.w_bits < 5
    assert not skipped  # not_results.json sits beside, not inside, the given folder


def test_report_page(setup, tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    cache = tmp_path / "cache"
    done = write_report(setup["paths"], out, cache_dir=cache, data_root=setup["root"])
    html = out.read_text()
    assert done.runs == 4 and done.images == 2
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html), "the page must not load anything"
    assert len(re.findall(r'<tr id="row-', html)) == 4
    assert html.count('<svg') >= 3 and "Pareto front" in html
    assert html.count("data:image/png;base64,") == 2 * 5  # HR, bicubic, FP and the 2 runs, per image
    assert "without a model" in html and "percentile W3A3" in html
    crops = sorted((setup["runs"] / "minmax_w4a4" / "report_crops").glob("Set14_*.png"))
    assert len(crops) == 2 and all(p.with_suffix(".json").is_file() for p in crops)
    mtimes = {p: p.stat().st_mtime_ns for p in crops}

    def no_model(*args, **kwargs):
        raise AssertionError("a cached crop must not load a model")

    monkeypatch.setattr(srq.api, "load", no_model)
    monkeypatch.setattr(srq.models, "create_model", no_model)
    again = write_report(setup["paths"], tmp_path / "again.html", cache_dir=cache, data_root=setup["root"])
    assert again.images == 2 and again.bytes == done.bytes
    assert {p: p.stat().st_mtime_ns for p in crops} == mtimes  # cached, not recomputed


def test_named_images_and_no_crops(setup, tmp_path):
    done = write_report(setup["paths"], tmp_path / "a.html", images=["Set14/barbara"], cache_dir=tmp_path / "c",
                        data_root=setup["root"])
    assert done.images == 1 and "Set14/barbara" in (tmp_path / "a.html").read_text()
    done = write_report(setup["paths"], tmp_path / "b.html", crops=False)
    assert done.images == 0 and "data:image/png" not in (tmp_path / "b.html").read_text()
    with pytest.raises(SrqError, match="no image 'nope' in Set14"):
        write_report(setup["paths"], tmp_path / "c.html", images=["Set14/nope"], cache_dir=tmp_path / "c",
                     data_root=setup["root"])
    assert not (tmp_path / "c.html").exists()


def _srq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([console_script(), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["missing", "not_results", "empty_folder", "bad_output", "unwritable", "no_paths",
                                  "bad_images"])
def test_cli_errors_are_one_line(setup, tmp_path, case):
    (tmp_path / "empty").mkdir()
    args = {"missing": [str(tmp_path / "nothing"), "-o", str(tmp_path / "r.html")],
            "not_results": [str(setup["tmp"] / "not_results.json"), "-o", str(tmp_path / "r.html")],
            "empty_folder": [str(tmp_path / "empty"), "-o", str(tmp_path / "r.html")],
            "bad_output": [str(setup["tmp"] / "fp.json"), "-o", str(tmp_path / "r.txt")],
            "unwritable": [str(setup["tmp"] / "fp.json"), "-o", "/proc/srq-cannot-write-here/r.html"],
            "no_paths": ["-o", str(tmp_path / "r.html")],
            "bad_images": [str(setup["tmp"] / "fp.json"), "--images", "barbara", "-o", str(tmp_path / "r.html")]}
    proc = _srq("report", *args[case])
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith(("Usage:", "Try "))]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_cli_report(setup, tmp_path):
    out = tmp_path / "cli.html"
    proc = _srq("report", *map(str, setup["paths"]), "-o", str(out), "--no-crops", "--datasets", "Set14")
    assert proc.returncode == 0, proc.stderr
    assert "report of 4 runs" in proc.stderr and out.is_file()


# --- headless Chromium --------------------------------------------------------------------------------------------

def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class _DevTools:
    """The Chrome DevTools protocol over ``--remote-debugging-pipe`` (fd 3: commands in, fd 4: events out;
    NUL-separated JSON), enough to load a page, collect console errors, evaluate a script and take a
    screenshot."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def fds() -> None:
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._id, self._buf, self.events = 0, b"", []  # type: ignore[var-annotated]
        self.session: str | None = None

    def _read(self, timeout: float) -> dict:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._r], [], [], timeout)
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read(timeout)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._r)
        os.close(self._w)


_CHECK = """(async () => {
  const imgs = Array.from(document.images);
  const decoded = await Promise.all(imgs.map(i => i.decode().then(() => i.naturalWidth > 0, () => false)));
  const canvases = Array.from(document.querySelectorAll(".compare canvas"));
  return {images: imgs.length, decoded: decoded.filter(Boolean).length,
          rows: document.querySelectorAll("table.runs tbody tr").length,
          plots: document.querySelectorAll(".plots svg").length,
          drawn: canvases.filter(c => c.getContext("2d").getImageData(0, 0, c.width, c.height).data
                                       .some((v, k) => k % 4 === 3 && v > 0)).length,
          canvases: canvases.length};
})()"""


def test_report_in_headless_chromium(setup, tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium; .ci/run installs it where apt works)")
    out = tmp_path / "report.html"
    write_report(setup["paths"], out, cache_dir=tmp_path / "cache", data_root=setup["root"])
    tools = _DevTools(binary, tmp_path / "profile")
    try:
        target = tools.send("Target.createTarget", url="about:blank")["targetId"]
        tools.session = tools.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            tools.send(f"{domain}.enable")
        tools.send("Emulation.setDeviceMetricsOverride", width=1366, height=900, deviceScaleFactor=1, mobile=False)
        tools.send("Page.navigate", url=out.as_uri())
        tools.wait_for("Page.loadEventFired")
        result = tools.send("Runtime.evaluate", expression=_CHECK, awaitPromise=True, returnByValue=True)
        checks = result["result"]["value"]
        shot = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (tmp_path / "screenshot.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        tools.close()
    errors = [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown"
              or e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")
              or e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    assert not errors, errors
    assert checks["images"] == 10 and checks["decoded"] == checks["images"], checks
    assert checks["rows"] == 4 and checks["plots"] == 3, checks
    assert checks["canvases"] == 4 and checks["drawn"] == 4, checks  # the before/after sliders painted
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
