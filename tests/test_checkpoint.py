"""Safe checkpoint reading: wrappers, prefixes, formats, refusal of code-executing pickles, key reports."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from srq.errors import SrqError
from srq.models.checkpoint import check_state_dict, load_weights, read_checkpoint
from srq.models.paddle import read_pdparams


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))


class _Evil:
    """Pickles to a call of ``open(marker, 'w')``: any loader that runs it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("wrapper", [None, "params", "params_ema", "state_dict", "model"])
def test_wrappers_and_module_prefix(tmp_path, wrapper):
    net = _net()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    obj = {wrapper: state, "iter": 5} if wrapper else state
    torch.save(obj, tmp_path / "ckpt.pth")
    loaded = read_checkpoint(tmp_path / "ckpt.pth")
    assert set(loaded) == set(net.state_dict())


def test_params_ema_preferred_over_params(tmp_path):
    net = _net()
    ema = {k: v + 1 for k, v in net.state_dict().items()}
    torch.save({"params": net.state_dict(), "params_ema": ema}, tmp_path / "ckpt.pth")
    loaded = read_checkpoint(tmp_path / "ckpt.pth")
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)


def test_safetensors_roundtrip_bit_exact(tmp_path):
    net = _net()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    load_weights(other, tmp_path / "w.safetensors")
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(net(x), other(x))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 4])
def test_code_executing_pickle_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv.weight": _Evil(marker)}, f, protocol=protocol)
    with pytest.raises(SrqError, match="refused"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(SrqError, match="refused|not a readable"):
        read_checkpoint(tmp_path / "bad.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(SrqError, match="safetensors"):
        read_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(SrqError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


def test_key_report_names_keys_in_one_line():
    net = _net()
    state = dict(net.state_dict())
    state["2.weight"] = torch.zeros(5, 4, 1, 1)
    with pytest.raises(SrqError) as e:
        check_state_dict(net, state, model_name="toy x4")
    msg = str(e.value)
    assert "\n" not in msg and "2.weight (5, 4, 1, 1) vs (2, 4, 1, 1)" in msg and "--scale" in msg
    state = {k: v for k, v in net.state_dict().items() if k != "0.bias"}
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(SrqError, match=r"missing: 0\.bias; unexpected: extra\.weight"):
        check_state_dict(net, state)


def test_pdparams_numpy_only(tmp_path):
    good = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "StructuredToParameterName@@": {"a": "b"}}
    with open(tmp_path / "good.pdparams", "wb") as f:
        pickle.dump(good, f, protocol=4)
    state = read_pdparams(tmp_path / "good.pdparams")
    assert list(state) == ["a.weight"] and state["a.weight"].tolist() == [[0, 1, 2], [3, 4, 5]]
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pdparams", "wb") as f:
        pickle.dump({"a.weight": _Evil(marker)}, f, protocol=4)
    with pytest.raises(SrqError, match=r"refused.*io\.open"):
        read_checkpoint(tmp_path / "evil.pdparams")
    assert not marker.exists()


def test_a_file_name_at_the_file_system_limit_is_written_atomically(tmp_path):
    from srq.engine.results import atomic_write_text
    from srq.fileio import temp_beside

    path = tmp_path / ("r" * 250 + ".json")  # 255 bytes: the longest name a Linux file system takes
    atomic_write_text(path, "{}\n")
    assert path.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert len(temp_beside(path).name) < 40
