"""Shared fixtures: where the benchmark data and the official weights are.

Data-dependent tests look in ``$SRQ_DATA`` / ``$SRQ_WEIGHTS`` and fall back to ``../shared/data`` and
``../shared/weights`` next to the repository; when neither exists they are skipped, not failed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _root(env: str, fallback: Path) -> Path | None:
    value = os.environ.get(env)
    if value:
        return Path(value)
    return fallback if fallback.is_dir() else None


DATA_ROOT = _root("SRQ_DATA", REPO.parent / "shared" / "data")
WEIGHTS_ROOT = _root("SRQ_WEIGHTS", REPO.parent / "shared" / "weights")
# srq itself (``srq.paths``, ``weights="official"``, skip conditions written with ``weights_root()``) reads the
# variables, so the fallback is exported: without it those tests skipped in CI while the weights were at hand.
for _name, _root_dir in (("SRQ_DATA", DATA_ROOT), ("SRQ_WEIGHTS", WEIGHTS_ROOT)):
    if _root_dir is not None:
        os.environ.setdefault(_name, str(_root_dir))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The benchmark data root (holds ``benchmarks/``, ``calibration/``, ``fixtures/``)."""
    if DATA_ROOT is None or not DATA_ROOT.is_dir():
        pytest.skip("benchmark data not found: set SRQ_DATA")
    return DATA_ROOT


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """The folder holding the official checkpoints (``imdn_x4.pth``, ...)."""
    if WEIGHTS_ROOT is None or not WEIGHTS_ROOT.is_dir():
        pytest.skip("official weights not found: set SRQ_WEIGHTS")
    return WEIGHTS_ROOT


def console_script() -> str:
    """The installed ``srq`` console script (next to this interpreter, else on PATH)."""
    import shutil
    import sys

    here = Path(sys.executable).parent / ("srq.exe" if os.name == "nt" else "srq")
    found = str(here) if here.exists() else shutil.which("srq")
    if found is None:
        pytest.fail("the `srq` console script is not installed; install the project with pip as the README says")
    return found


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of many small ops, which oversubscribed CI cores slow down ~10x
    (``pytestmark = pytest.mark.usefixtures("single_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def hr_folder(tmp_path_factory) -> Path:
    """A folder of three small HR photos (shipped with scikit-image) for training tests."""
    from srq.data import write_image
    from srq.data.samples import sample_images

    folder = tmp_path_factory.mktemp("hr")
    for name, img in sample_images("train")[:3]:
        write_image(folder / f"{name}.png", img)
    return folder
