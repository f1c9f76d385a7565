"""Issue 32, "any architecture a user brings": items 1 and 6 and the command line for a user's model.

1. ``register_model`` works without a description or docstring (it raised IndexError) and refuses bad arguments
   in one line; a model that is not in the zoo is quantized and evaluated from the command line
   (``srq quantize my_arch.py:build_model``, ``srq eval RUN --model-code my_arch.py:build_model``).
6. Width/depth variants of zoo families are reachable (``create_model("rlfn", 4, feature_channels=48)``), saved and
   rebuilt; a checkpoint of another width names the keyword instead of "check --scale"; a model's pixel range is
   declared with ``srq.models.wrap`` / ``--pixel-range`` and a [0, 255] output is warned about.
The README's "Quantize your own model" section runs as written, in an empty folder.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import srq
from srq.cli import app
from srq.cli_support import run_app
from srq.errors import ConfigError, SrqError
from srq.models import registry
from srq.models.checks import check_output_range
from srq.models.user import from_file
from srq.models.wrappers import PixelRangeWrapper

REPO = Path(__file__).resolve().parents[1]

USER_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, scale=2, channels=6, offset=0.0):
        super().__init__()
        self.scale, self.offset = scale, offset
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)

    def forward(self, x):
        up = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return F.pixel_shuffle(self.tail(torch.relu(self.head(x))), self.scale) + up + self.offset


def build_model(scale, channels=6):
    return Net(scale, channels)


def build_255(scale):
    return Net(scale, offset=100.0)


def fixed():
    return Net(2)


def not_a_module(scale):
    return "net"


def broken(scale):
    return undefined_name
'''


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_arch.py"
    path.write_text(USER_FILE)
    return path


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """Run the srq command line in this process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # run_app replaces it
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code = run_app(app, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code: int, err: str, *fragments: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- 1. register_model ------------------------------------------------------------------------------------------

def test_register_model_without_description_or_docstring(clean_registry):
    @srq.models.register_model("my_undocumented", scales=(2,))
    def build(scale):  # no docstring, no description=: this raised IndexError
        return nn.Conv2d(3, 12, 3)

    info = srq.models.get_model_info("my_undocumented")
    assert info.description == "my_undocumented" and "my_undocumented" in srq.list_models("my_*")
    assert srq.create_model("my_undocumented", 2).srq_spec["model"] == "my_undocumented"


def _scale_only(scale):
    return nn.Identity()


@pytest.mark.parametrize("kwargs, builder, says", [
    ({"name": "my/net", "scales": (2,)}, _scale_only, "name must be"),
    ({"name": "", "scales": (2,)}, _scale_only, "name must be"),
    ({"name": "n", "scales": ()}, _scale_only, "scales must be a tuple of positive integers"),
    ({"name": "n", "scales": 4}, _scale_only, "scales must be a tuple of positive integers"),
    ({"name": "n", "scales": (2,), "color": "bgr"}, _scale_only, "color must be 'rgb', 'y' or 'grey'"),
    ({"name": "n", "scales": (2,), "pixel_range": 0}, _scale_only, "pixel_range must be a positive number"),
    ({"name": "n", "scales": (2,), "weights": {4: "n_x4.pth"}}, _scale_only, "not in scales"),
    ({"name": "n", "scales": (2,)}, lambda: nn.Identity(), "must take the scale as its first argument"),
    ({"name": "n", "scales": (2,)}, lambda scale, width: nn.Identity(), "keywords with defaults"),
    ({"name": "n", "scales": (2,)}, "not callable", "decorates a function"),
])
def test_register_model_refuses_bad_arguments_in_one_line(clean_registry, kwargs, builder, says):
    with pytest.raises(ConfigError, match=re.escape(says)) as e:
        srq.models.register_model(**kwargs)(builder)
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


def test_register_twice_needs_replace(clean_registry):
    srq.models.register_model("twice", scales=(2,))(_scale_only)
    with pytest.raises(ConfigError, match="registered twice; pass replace=True"):
        srq.models.register_model("twice", scales=(2,))(_scale_only)
    srq.models.register_model("twice", scales=(4,), replace=True)(_scale_only)
    assert srq.models.get_model_info("twice").scales == (4,)


def test_registered_builder_keywords_are_architecture_parameters(clean_registry):
    @srq.models.register_model("my_width", scales=(2,))
    def build(scale: int, *, channels: int = 4) -> nn.Module:
        """A conv of some width."""
        return nn.Conv2d(3, channels, 3)

    assert srq.create_model("my_width", 2, channels=7).weight.shape[0] == 7
    with pytest.raises(SrqError, match="my_width has no architecture parameter 'width'; it accepts channels=4"):
        srq.create_model("my_width", 2, width=7)


# ---- 6. width/depth variants ------------------------------------------------------------------------------------

def test_create_model_reaches_a_width_variant():
    net = srq.create_model("rlfn", scale=4, feature_channels=48)  # RLFN-S
    assert net.net.conv_1.weight.shape[0] == 48
    assert net.srq_spec["arch"] == {"feature_channels": 48}
    assert "arch" not in srq.create_model("rlfn", scale=4).srq_spec  # the default variant: as before


def test_unknown_or_mistyped_arch_param_lists_the_accepted_ones():
    with pytest.raises(SrqError, match=r"rlfn has no architecture parameter 'nf'; it accepts feature_channels=52, "
                                       r"num_blocks=6, esa_channels=16") as e:
        srq.create_model("rlfn", 4, nf=48)
    assert "\n" not in str(e.value)
    with pytest.raises(SrqError, match=r"feature_channels='wide' must be int \(default 52\)"):
        srq.create_model("rlfn", 4, feature_channels="wide")
    with pytest.raises(SrqError, match="bicubic has no architecture parameter 'channels'; it takes none"):
        srq.create_model("bicubic", 4, channels=3)


def test_every_zoo_builder_has_a_readable_signature():
    for name in srq.list_models():
        defaults = srq.models.arch_defaults(srq.models.get_model_info(name))
        assert all(not isinstance(v, list) for v in defaults.values()), name


def test_save_and_load_rebuild_the_variant(tmp_path):
    torch.manual_seed(0)
    model = srq.create_model("srq_tiny", 4, channels=8, blocks=1)
    q = srq.quantize(model, srq.methods.MinMax(w_bits=4, a_bits=4), torch.rand(2, 3, 12, 12), progress=False)
    srq.save(q, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "srq.json").read_text())
    assert meta["architecture"]["arch"] == {"channels": 8, "blocks": 1}
    loaded = srq.load(tmp_path / "run")
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))


def test_a_folder_without_arch_means_the_defaults(tmp_path):
    q = srq.quantize(srq.create_model("srq_tiny", 4), srq.methods.MinMax(w_bits=8, a_bits=8),
                     torch.rand(1, 3, 8, 8), progress=False)
    srq.save(q, tmp_path / "run")
    assert "arch" not in json.loads((tmp_path / "run" / "srq.json").read_text())["architecture"]
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(srq.load(tmp_path / "run")(x), q(x))


def _checkpoint(tmp_path: Path, name: str, scale: int, **arch) -> Path:
    path = tmp_path / f"{name}.pth"
    torch.save(srq.create_model(name, scale, wrap=False, **arch).state_dict(), path)
    return path


def test_a_narrower_checkpoint_names_the_width_keyword(tmp_path):
    path = _checkpoint(tmp_path, "rlfn", 4, feature_channels=48)
    with pytest.raises(SrqError) as e:
        srq.create_model("rlfn", 4, path)  # said "check --scale" before
    message = str(e.value)
    assert "has 48 channels where rlfn x4 has 52 (feature_channels): pass feature_channels=48" in message
    assert "--scale" not in message and "\n" not in message
    srq.create_model("rlfn", 4, path, feature_channels=48)  # and then it loads


def test_a_shallower_checkpoint_names_the_depth_keyword(tmp_path):
    path = _checkpoint(tmp_path, "rlfn", 4, num_blocks=4)
    with pytest.raises(SrqError, match=r"has 4 blocks where rlfn x4 has 6 \(num_blocks\): pass num_blocks=4"):
        srq.create_model("rlfn", 4, path)


def test_another_scale_still_says_check_scale(tmp_path):
    path = _checkpoint(tmp_path, "rlfn", 2)
    with pytest.raises(SrqError, match=r"same architecture at another scale: check --scale"):
        srq.create_model("rlfn", 4, path)


def test_width_without_a_known_keyword_gets_the_generic_hint():
    from srq.models.checkpoint import check_state_dict

    state = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in nn.Conv2d(3, 5, 1).state_dict().items()}
    with pytest.raises(SrqError, match=r"a different width \(or scale\) of this architecture"):
        check_state_dict(nn.Conv2d(3, 5, 1), state)


# ---- pixel range ------------------------------------------------------------------------------------------------

def test_wrap_declares_the_pixel_range():
    net = nn.Conv2d(3, 3, 1)
    assert srq.models.wrap(net) is net and srq.models.wrap(net, pixel_range=1) is net
    wrapped = srq.models.wrap(net, pixel_range=255)
    assert isinstance(wrapped, PixelRangeWrapper) and wrapped.net is net and wrapped.pixel_range == 255.0
    with pytest.raises(SrqError, match="pixel_range must be a positive number"):
        srq.models.wrap(net, pixel_range=0)


class _Offset(nn.Module):
    def __init__(self, offset: float, scale: int = 2) -> None:
        super().__init__()
        self.offset, self.scale = offset, scale
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x + 0 * self.conv(x), scale_factor=self.scale) + self.offset


def test_check_output_range_warns_for_a_0_255_output():
    x = torch.rand(1, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"mean 10\d .*far outside \[0, 1\].*pixel_range=255"):
        check_output_range(_Offset(100.0), x, scale=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0 <= check_output_range(_Offset(0.0), x, scale=2) <= 1
    with pytest.raises(SrqError, match=r"maps a \(1, 3, 8, 8\) input to \(1, 3, 16, 16\), not \(1, 3, 32, 32\) "
                                       r"\(x4\); check --scale"):
        check_output_range(_Offset(0.0), x, scale=4)
    with pytest.raises(SrqError, match=r"fails on a \(1, 1, 8, 8\) input"):
        check_output_range(_Offset(0.0), torch.rand(1, 1, 8, 8), scale=2)


# ---- a user's model from a file -----------------------------------------------------------------------------------

def test_from_file_builds_loads_and_records(user_file, tmp_path):
    torch.save(from_file(f"{user_file}:build_model", 2).state_dict(), tmp_path / "w.pth")
    model = from_file(f"{user_file}:build_model", 2, tmp_path / "w.pth", pixel_range=255, arch={"channels": 6})
    assert isinstance(model, PixelRangeWrapper) and not model.training
    assert model.srq_source["function"] == "build_model" and model.srq_source["pixel_range"] == 255.0
    assert model.srq_source["sha256"] == srq.fileio.file_sha256(user_file) and model.srq_source["scale"] == 2
    assert from_file(f"{user_file}:fixed", 4).scale == 2  # a builder without `scale` is called with no arguments


@pytest.mark.parametrize("spec, says", [
    ("{dir}/nowhere.py:build_model", "model file {dir}/nowhere.py does not exist"),
    ("{file}", "name the function that builds the model after a colon"),
    ("{file}:missing", "has no function 'missing' (it defines Net, broken, build_255, build_model, fixed, "
                       "not_a_module)"),
    ("{file}:not_a_module", "my_arch.py:not_a_module returned an object of type str, not a torch nn.Module"),
    ("{file}:broken", "my_arch.py:broken(scale=2) failed (my_arch.py line 36): NameError: name 'undefined_name'"),
])
def test_from_file_errors_are_one_line(user_file, spec, says):
    fmt = {"dir": user_file.parent, "file": user_file}
    with pytest.raises(SrqError) as e:
        from_file(spec.format(**fmt), 2)
    assert says.format(**fmt) in str(e.value) and "\n" not in str(e.value)


def test_from_file_unknown_keyword_lists_the_builder_parameters(user_file):
    with pytest.raises(SrqError, match="my_arch.py:build_model has no parameter 'width'; it accepts channels"):
        from_file(f"{user_file}:build_model", 2, arch={"width": 3})


def test_cli_quantizes_and_evaluates_a_user_model(user_file, tmp_path, capsys, monkeypatch, tiny_set):
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(from_file(f"{user_file}:build_model", 2).state_dict(), weights)
    run = tmp_path / "run"
    code, out, err = cli(capsys, monkeypatch, "quantize", f"{user_file}:build_model", "--scale", "2", "--weights",
                         str(weights), "--calib", "samples", "--calib-n", "2", "--patch", "16", "-o", str(run),
                         "--device", "cpu")
    assert code == 0, err
    assert "my_arch.py:build_model x2 minmax w4a4" in err
    meta = json.loads((run / "srq.json").read_text())
    assert meta["architecture"] is None and meta["user_model"]["class"] == "my_arch.Net"
    record = meta["user_model"]["code"]
    assert record["file"] == str(user_file.resolve()) and record["function"] == "build_model"
    assert record["sha256"] == srq.fileio.file_sha256(user_file) and record["weights"] == "w.pth"

    code, _, err = cli(capsys, monkeypatch, "eval", str(run), "--datasets", str(tiny_set), "--device", "cpu")
    one_error_line(code, err, "holds a model of your own architecture (my_arch.Net)",
                   f"--model-code {user_file.resolve()}:build_model")
    results = tmp_path / "res.json"
    code, out, err = cli(capsys, monkeypatch, "eval", str(run), "--model-code", f"{user_file}:build_model",
                         "--datasets", str(tiny_set), "-o", str(results), "--device", "cpu")
    assert code == 0, err
    doc = json.loads(results.read_text())
    assert doc["model"] == "my_arch.py:build_model" and doc["code"]["function"] == "build_model"
    loaded = srq.load(run, model=from_file(f"{user_file}:build_model", 2))
    assert loaded.srq_recipe["method"] == "minmax"


def test_cli_user_model_errors_are_one_line(user_file, tmp_path, capsys, monkeypatch, tiny_set):
    wide = tmp_path / "wide.pth"
    torch.save(from_file(f"{user_file}:build_model", 2, arch={"channels": 9}).state_dict(), wide)
    base = ("--datasets", str(tiny_set), "--device", "cpu")
    code, _, err = cli(capsys, monkeypatch, "eval", f"{user_file}:build_model", "--scale", "2", "--weights",
                       str(wide), *base)
    one_error_line(code, err, "wide.pth does not fit my_arch.py:build_model",
                   "has 9 channels where my_arch.py:build_model has 6 (channels): pass channels=9 (-a channels=9")
    code, _, err = cli(capsys, monkeypatch, "eval", f"{user_file}:build_model", "--scale", "2", "--weights",
                       str(wide), "-a", "channels=9", *base)
    assert code == 0, err
    code, _, err = cli(capsys, monkeypatch, "eval", f"{user_file}:not_a_module", "--scale", "2", *base)
    one_error_line(code, err, "not a torch nn.Module")
    code, _, err = cli(capsys, monkeypatch, "eval", f"{user_file}:nope", "--scale", "2", *base)
    one_error_line(code, err, "has no function 'nope'")
    code, _, err = cli(capsys, monkeypatch, "eval", str(tmp_path / "gone.py:build_model"), "--scale", "2", *base)
    one_error_line(code, err, "gone.py does not exist")
    code, _, err = cli(capsys, monkeypatch, "eval", f"{user_file}:fixed", "--scale", "4", *base)
    one_error_line(code, err, "not (1, 3, 128, 128) (x4); check --scale")
    code, _, err = cli(capsys, monkeypatch, "eval", "rlfn", "--scale", "4", "-a", "nf=48", *base)
    one_error_line(code, err, "rlfn has no architecture parameter 'nf'; it accepts feature_channels=52")
    code, _, err = cli(capsys, monkeypatch, "eval", "rlfn", "--scale", "4", "--pixel-range", "255", *base)
    one_error_line(code, err, "--pixel-range is for a model from your own file")


def test_cli_warns_about_an_undeclared_0_255_model_and_accepts_the_declaration(user_file, capsys, monkeypatch,
                                                                               tiny_set):
    base = ("--datasets", str(tiny_set), "--device", "cpu")
    code, _, err = cli(capsys, monkeypatch, "eval", f"{user_file}:build_255", "--scale", "2", *base)
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "--pixel-range 255" in warning[0]
    code, _, err = cli(capsys, monkeypatch, "eval", f"{user_file}:build_255", "--scale", "2", "--pixel-range",
                       "255", *base)
    assert code == 0 and "warning:" not in err, err


@pytest.fixture
def tiny_set(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    folder = tmp_path / "MySet"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / "img0.png")
    return folder


# ---- the README section -------------------------------------------------------------------------------------------

def _section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end >= 0 else None]


def test_readme_section_runs_as_written(tmp_path, monkeypatch, capsys, data_root):
    section = _section((REPO / "README.md").read_text(), "Quantize your own model")
    python = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    shell = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    assert len(python) == 2 and len(shell) == 1
    shutil.copy(REPO / "docs" / "examples" / "my_sr_net.py", tmp_path)  # "copied into the current folder"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SRQ_DATA", str(data_root))
    monkeypatch.delitem(__import__("sys").modules, "my_sr_net", raising=False)
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(python[0], "README.md", "exec"), scope)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(scope["reloaded"](x), scope["qmodel"](x))
    for line in (ln for ln in shell[0].splitlines() if ln.strip() and not ln.startswith("#")):
        args = line.split("#")[0].split()
        assert args[0] == "srq"
        code, out, err = cli(capsys, monkeypatch, *args[1:], "--device", "cpu")
        assert code == 0, (line, err)
    assert "Set5" in out and "MySRNet" in out
    exec(compile(python[1], "README.md", "exec"), scope)
    assert "feature_channels" in capsys.readouterr().out


def test_a_user_run_folder_says_how_to_rebuild_and_warns_when_the_file_changed(user_file, tmp_path):
    from srq.models.user import from_record

    model = from_file(f"{user_file}:build_model", 2, pixel_range=255, arch={"channels": 4})
    q = srq.quantize(model, srq.methods.MinMax(w_bits=8, a_bits=8), torch.rand(1, 3, 8, 8), progress=False)
    srq.save(q, tmp_path / "run")
    with pytest.raises(SrqError, match=r"srq\.models\.from_file\('.*my_arch\.py:build_model', scale=2, "
                                       r"pixel_range=255, arch=\{'channels': 4\}\).*--model-code"):
        srq.load(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "srq.json").read_text())["user_model"]["code"]
    user_file.write_text(USER_FILE + "\n# edited\n")
    with pytest.warns(UserWarning, match="differs from the one the run was made with"):
        rebuilt = srq.load(tmp_path / "run", model=from_record(record))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), q(x))
