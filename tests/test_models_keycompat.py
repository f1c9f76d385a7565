"""Key compatibility of EDSR, RDN, MSRResNet and SRResNet with their official releases.

The official checkpoints cannot be shipped or downloaded here, so the expected key names and shapes
are written out below from the official architecture definitions (source named at each list) and
compared with ``state_dict()``. Checkpoints in the *other* release's naming are built from these lists
(independently of the adapt functions), saved as ``.pth`` and ``.safetensors`` and loaded through
:func:`srq.models.checkpoint.load_weights`. The EDSR mean-shift formulations of EDSR-PyTorch ([0, 255]
input) and BasicSR ([0, 1] input) are re-implemented functionally and compared numerically.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from srq.errors import SrqError
from srq.models.checkpoint import load_weights
from srq.models.registry import create_model, get_model_info

Shapes = dict[str, tuple[int, ...]]

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)  # EDSR-PyTorch src/model/common.py MeanShift rgb_mean; BasicSR rgb_mean


# --------------------------------------------------------------------------------------------------
# Official key lists

def conv(prefix: str, cout: int, cin: int, k: int = 3) -> Shapes:
    return {f"{prefix}.weight": (cout, cin, k, k), f"{prefix}.bias": (cout,)}


def edsr_pytorch_keys(n_blocks: int, f: int, scale: int) -> Shapes:
    """sanghyun-son/EDSR-PyTorch @ src/model/edsr.py (class EDSR) + src/model/common.py
    (MeanShift(nn.Conv2d(3, 3, 1)), ResBlock: body = [conv, ReLU, conv], Upsampler: [conv 4F, PixelShuffle(2)]
    per factor 2, or [conv 9F, PixelShuffle(3)] for x3). Configs from the ``url`` dict of edsr.py:
    r16f64x{2,3,4} (edsr_baseline_x*.pt, res_scale 1), r32f256x{2,3,4} (edsr_x*.pt, res_scale 0.1).
    Insertion order: sub_mean, add_mean, head, body, tail (as in EDSR.__init__)."""
    keys: Shapes = {"sub_mean.weight": (3, 3, 1, 1), "sub_mean.bias": (3,),
                    "add_mean.weight": (3, 3, 1, 1), "add_mean.bias": (3,)}
    keys |= conv("head.0", f, 3)
    for i in range(n_blocks):
        keys |= conv(f"body.{i}.body.0", f, f) | conv(f"body.{i}.body.2", f, f)
    keys |= conv(f"body.{n_blocks}", f, f)
    tail = {2: conv("tail.0.0", 4 * f, f),
            3: conv("tail.0.0", 9 * f, f),
            4: conv("tail.0.0", 4 * f, f) | conv("tail.0.2", 4 * f, f)}[scale]
    return keys | tail | conv("tail.1", 3, f)


def edsr_basicsr_keys(n_blocks: int, f: int, scale: int) -> Shapes:
    """XPixelGroup/BasicSR @ basicsr/archs/edsr_arch.py (class EDSR; ``self.mean`` is a plain tensor
    attribute, not in the state dict) + basicsr/archs/arch_util.py (ResidualBlockNoBN conv1/conv2,
    Upsample: [Conv2d 4F, PixelShuffle(2)] * log2(s) or [Conv2d 9F, PixelShuffle(3)]); configs from
    options/test/EDSR/test_EDSR_{M,L}x{2,3,4}.yml (num_feat 64/256, num_block 16/32)."""
    keys = conv("conv_first", f, 3)
    for i in range(n_blocks):
        keys |= conv(f"body.{i}.conv1", f, f) | conv(f"body.{i}.conv2", f, f)
    keys |= conv("conv_after_body", f, f)
    up = {2: conv("upsample.0", 4 * f, f),
          3: conv("upsample.0", 9 * f, f),
          4: conv("upsample.0", 4 * f, f) | conv("upsample.2", 4 * f, f)}[scale]
    return keys | up | conv("conv_last", 3, f)


def rdn_keys(scale: int, g0: int = 64, d: int = 16, c: int = 8, g: int = 64) -> Shapes:
    """sanghyun-son/EDSR-PyTorch @ src/model/rdn.py (stored as code/model/rdn.py), RDNconfig 'B':
    (D, C, G) = (16, 8, 64), G0 = 64, RDNkSize 3, n_colors 3. RDB_Conv.conv = [Conv2d, ReLU];
    RDB.LFF = Conv2d(G0 + C*G, G0, 1); GFF = [Conv2d(D*G0, G0, 1), Conv2d(G0, G0, 3)];
    UPNet x2/x3 = [Conv2d(G0, G*r*r), PixelShuffle(r), Conv2d(G, 3)],
    x4 = [Conv2d(G0, 4G), PixelShuffle(2), Conv2d(G, 4G), PixelShuffle(2), Conv2d(G, 3)]."""
    keys = conv("SFENet1", g0, 3) | conv("SFENet2", g0, g0)
    for i in range(d):
        for j in range(c):
            keys |= conv(f"RDBs.{i}.convs.{j}.conv.0", g, g0 + j * g)
        keys |= conv(f"RDBs.{i}.LFF", g0, g0 + c * g, k=1)
    keys |= conv("GFF.0", g0, d * g0, k=1) | conv("GFF.1", g0, g0)
    up = {2: conv("UPNet.0", g * 4, g0) | conv("UPNet.2", 3, g),
          3: conv("UPNet.0", g * 9, g0) | conv("UPNet.2", 3, g),
          4: conv("UPNet.0", g * 4, g0) | conv("UPNet.2", g * 4, g) | conv("UPNet.4", 3, g)}[scale]
    return keys | up


def msrresnet_keys(scale: int, f: int = 64, nb: int = 16, legacy: bool = False) -> Shapes:
    """XPixelGroup/BasicSR @ basicsr/archs/srresnet_arch.py (MSRResNet: conv_first, body = ResidualBlockNoBN
    x num_block, upconv1 = Conv2d(F, F*s*s) for x2/x3 or Conv2d(F, 4F) + upconv2 for x4, conv_hr,
    conv_last); options/test/SRResNet_SRGAN/test_MSRResNet_x{2,3,4}.yml (num_feat 64, num_block 16).
    ``legacy``: the mmsr / BasicSR < 1.0 names, open-mmlab/mmagic @ codes/models/archs/SRResNet_arch.py
    (recon_trunk instead of body, HRconv instead of conv_hr)."""
    trunk, hr = ("recon_trunk", "HRconv") if legacy else ("body", "conv_hr")
    keys = conv("conv_first", f, 3)
    for i in range(nb):
        keys |= conv(f"{trunk}.{i}.conv1", f, f) | conv(f"{trunk}.{i}.conv2", f, f)
    keys |= conv("upconv1", f * (4 if scale == 4 else scale * scale), f)
    if scale == 4:
        keys |= conv("upconv2", 4 * f, f)
    return keys | conv(hr, f, f) | conv("conv_last", 3, f)


def srresnet_keys(scale: int, n: int = 64, nb: int = 16) -> Shapes:
    """sgrvinod/a-PyTorch-Tutorial-to-Super-Resolution @ models.py (class SRResNet with ConvolutionalBlock
    .conv_block = [Conv2d, BatchNorm2d?, PReLU()/Tanh?], ResidualBlock.conv_block{1,2},
    SubPixelConvolutionalBlock .conv/.pixel_shuffle/.prelu); config of train_srresnet.py:
    large_kernel_size 9, small_kernel_size 3, n_channels 64, n_blocks 16, scaling_factor 4.
    nn.PReLU() has a single weight; BatchNorm2d contributes running_mean/var and num_batches_tracked."""

    def bn(prefix: str) -> Shapes:
        return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}

    keys = conv("conv_block1.conv_block.0", n, 3, k=9) | {"conv_block1.conv_block.1.weight": (1,)}
    for i in range(nb):
        p = f"residual_blocks.{i}"
        keys |= conv(f"{p}.conv_block1.conv_block.0", n, n) | bn(f"{p}.conv_block1.conv_block.1")
        keys |= {f"{p}.conv_block1.conv_block.2.weight": (1,)}
        keys |= conv(f"{p}.conv_block2.conv_block.0", n, n) | bn(f"{p}.conv_block2.conv_block.1")
    keys |= conv("conv_block2.conv_block.0", n, n) | bn("conv_block2.conv_block.1")
    for j in range({2: 1, 4: 2, 8: 3}[scale]):
        keys |= conv(f"subpixel_convolutional_blocks.{j}.conv", 4 * n, n)
        keys |= {f"subpixel_convolutional_blocks.{j}.prelu.weight": (1,)}
    return keys | conv("conv_block3.conv_block.0", 3, n, k=9)


EDSR_CONFIGS = {"edsr_baseline": (16, 64, 1.0), "edsr": (32, 256, 0.1)}  # n_resblocks, n_feats, res_scale

EXPECTED = {
    **{(name, s): edsr_pytorch_keys(nb, f, s) for name, (nb, f, _) in EDSR_CONFIGS.items() for s in (2, 3, 4)},
    **{("rdn", s): rdn_keys(s) for s in (2, 3, 4)},
    **{("msrresnet", s): msrresnet_keys(s) for s in (2, 3, 4)},
    **{("srresnet", s): srresnet_keys(s) for s in (2, 4, 8)},
}


def shapes(net: torch.nn.Module) -> Shapes:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def build(name: str, scale: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model_info(name).builder(scale).eval()


def randomize_(net: torch.nn.Module, seed: int = 1) -> None:
    """Give every float parameter/buffer a distinct random value (BatchNorm stats stay valid)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if not v.is_floating_point() or "_mean." in k:  # EDSR mean-shift constants stay
                continue
            if k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            else:
                v.copy_(torch.randn(v.shape, generator=g) * 0.05)


def save(state: dict[str, torch.Tensor], path, wrapper: str | None = None) -> None:
    """``.safetensors`` flat; ``.pth`` optionally under ``wrapper`` (BasicSR saves ``{"params": ...}``)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrapper: state} if wrapper else state, str(path))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors only: one intra-op thread is faster and immune to CPU oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def edsr_large_x4() -> torch.nn.Module:
    """The one real (43M-parameter) EDSR large instance of this module."""
    return build("edsr", 4)


# --------------------------------------------------------------------------------------------------
# 1. state_dict keys and shapes equal the official ones

def test_registered() -> None:
    for name, scales in [("edsr_baseline", (2, 3, 4)), ("edsr", (2, 3, 4)), ("rdn", (2, 3, 4)),
                         ("msrresnet", (2, 3, 4)), ("srresnet", (2, 4, 8))]:
        info = get_model_info(name)
        assert info.scales == scales and info.source and info.color == "rgb"
        assert info.pixel_range == (255.0 if name == "rdn" else 1.0)


@pytest.mark.parametrize("name,scale", sorted(EXPECTED))
def test_state_dict_matches_official(name: str, scale: int) -> None:
    with torch.device("meta"):  # shapes only: no 43M-parameter allocation for EDSR large
        net = get_model_info(name).builder(scale)
    assert shapes(net) == EXPECTED[(name, scale)]


def test_edsr_parameter_counts() -> None:
    # EDSR-PyTorch README table: baseline 1.37M / 1.55M / 1.52M, EDSR 40.7M / 43.7M / 43.1M (x2 / x3 / x4).
    want = {("edsr_baseline", 2): 1.37, ("edsr_baseline", 3): 1.55, ("edsr_baseline", 4): 1.52,
            ("edsr", 2): 40.7, ("edsr", 3): 43.7, ("edsr", 4): 43.1}
    for (name, scale), millions in want.items():
        with torch.device("meta"):
            net = get_model_info(name).builder(scale)
        assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2 if millions < 10 else 1) == millions


# --------------------------------------------------------------------------------------------------
# 2. checkpoints in the other release's naming load and give identical outputs

def rename(state: dict[str, torch.Tensor], ours: Shapes, theirs: Shapes) -> dict[str, torch.Tensor]:
    """Map our tensors onto ``theirs`` key list position by position (both lists in module order)."""
    assert len(ours) == len(theirs)
    out = {}
    for (k_ours, s_ours), (k_theirs, s_theirs) in zip(ours.items(), theirs.items()):
        assert s_ours == s_theirs, (k_ours, k_theirs)
        out[k_theirs] = state[k_ours].clone()
    return out


def roundtrip(net: torch.nn.Module, name: str, foreign: dict[str, torch.Tensor], tmp_path, suffix: str,
              x: torch.Tensor, wrapper: str | None = None) -> None:
    """Scramble ``net``, load ``foreign`` through load_weights + the registered adapter, compare outputs."""
    with torch.no_grad():
        want_state = {k: v.clone() for k, v in net.state_dict().items()}
        want = net(x)
        for v in net.state_dict().values():
            if v.is_floating_point():
                v.zero_()
    path = tmp_path / f"ckpt{suffix}"
    save(foreign, path, wrapper)
    load_weights(net, path, model_name=name, adapt=get_model_info(name).adapt_state_dict)
    for k, v in net.state_dict().items():
        assert torch.equal(v, want_state[k]), k
    with torch.no_grad():
        assert torch.equal(net(x), want)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_baseline_loads_basicsr(scale: int, suffix: str, tmp_path) -> None:
    net = build("edsr_baseline", scale)
    ours = {k: v for k, v in EXPECTED[("edsr_baseline", scale)].items() if "_mean." not in k}
    foreign = rename(net.state_dict(), ours, edsr_basicsr_keys(16, 64, scale))
    assert not any("mean" in k for k in foreign)
    roundtrip(net, "edsr_baseline", foreign, tmp_path, suffix, torch.rand(1, 3, 6, 5), wrapper="params")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_edsr_large_loads_basicsr(edsr_large_x4, suffix: str, tmp_path) -> None:
    ours = {k: v for k, v in EXPECTED[("edsr", 4)].items() if "_mean." not in k}
    foreign = rename(edsr_large_x4.state_dict(), ours, edsr_basicsr_keys(32, 256, 4))
    roundtrip(edsr_large_x4, "edsr", foreign, tmp_path, suffix, torch.rand(1, 3, 3, 2), wrapper="params")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_edsr_native_loads_unchanged(suffix: str, tmp_path) -> None:
    net = build("edsr_baseline", 3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    adapt = get_model_info("edsr_baseline").adapt_state_dict
    assert adapt(state) is state
    roundtrip(net, "edsr_baseline", state, tmp_path, suffix, torch.rand(1, 3, 5, 4))


def test_edsr_refuses_other_mean_shift() -> None:
    """A file trained with EDSR-PyTorch --rgb_range 1 has sub_mean.bias = -mean: refused, not misused."""
    state = dict(build("edsr_baseline", 2).state_dict())
    state["sub_mean.bias"] = -torch.tensor(DIV2K_MEAN)
    with pytest.raises(SrqError, match="sub_mean.bias"):
        get_model_info("edsr_baseline").adapt_state_dict(state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_msrresnet_loads_mmsr(scale: int, suffix: str, tmp_path) -> None:
    net = build("msrresnet", scale)
    foreign = rename(net.state_dict(), EXPECTED[("msrresnet", scale)], msrresnet_keys(scale, legacy=True))
    roundtrip(net, "msrresnet", foreign, tmp_path, suffix, torch.rand(1, 3, 5, 6), wrapper="params")


@pytest.mark.parametrize("name,scale", [("msrresnet", 4), ("srresnet", 4), ("rdn", 2)])
def test_native_state_dict_roundtrip(name: str, scale: int, tmp_path) -> None:
    net = build(name, scale)
    randomize_(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    adapt = get_model_info(name).adapt_state_dict
    if adapt is not None:
        assert adapt(state) is state
    roundtrip(net, name, state, tmp_path, ".safetensors", torch.rand(1, 3, 5, 3))


def test_srresnet_loads_srgan_generator(tmp_path) -> None:
    # models.py Generator wraps the same SRResNet as ``self.net``: keys carry a ``net.`` prefix.
    net = build("srresnet", 4)
    randomize_(net)
    foreign = {f"net.{k}": v.clone() for k, v in net.state_dict().items()}
    roundtrip(net, "srresnet", foreign, tmp_path, ".pth", torch.rand(1, 3, 4, 5))


# --------------------------------------------------------------------------------------------------
# 3. EDSR mean shift: original [0, 255] formulation == BasicSR [0, 1] formulation == srq

def edsr_pytorch_forward(sd: dict[str, torch.Tensor], x255: torch.Tensor, n_blocks: int, res_scale: float,
                         scale: int) -> torch.Tensor:
    """EDSR-PyTorch EDSR.forward on [0, 255] input, with MeanShift rebuilt as common.MeanShift does."""
    std = torch.ones(3)
    w = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
    mean = torch.tensor(DIV2K_MEAN)
    c = lambda t, k: F.conv2d(t, sd[f"{k}.weight"], sd[f"{k}.bias"], padding=1)  # noqa: E731
    x = F.conv2d(x255, w, -255.0 * mean / std)
    x = c(x, "head.0")
    res = x
    for i in range(n_blocks):
        res = res + c(F.relu(c(res, f"body.{i}.body.0")), f"body.{i}.body.2") * res_scale
    res = c(res, f"body.{n_blocks}") + x
    for j, r in {2: [(0, 2)], 3: [(0, 3)], 4: [(0, 2), (2, 2)]}[scale]:
        res = F.pixel_shuffle(c(res, f"tail.0.{j}"), r)
    return F.conv2d(c(res, "tail.1"), w, 255.0 * mean / std)


def edsr_basicsr_forward(sd: dict[str, torch.Tensor], x01: torch.Tensor, n_blocks: int, res_scale: float,
                         scale: int) -> torch.Tensor:
    """BasicSR EDSR.forward (img_range 255) on [0, 1] input."""
    mean = torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1)
    c = lambda t, k: F.conv2d(t, sd[f"{k}.weight"], sd[f"{k}.bias"], padding=1)  # noqa: E731
    x = c((x01 - mean) * 255.0, "conv_first")
    res = x
    for i in range(n_blocks):
        res = res + c(F.relu(c(res, f"body.{i}.conv1")), f"body.{i}.conv2") * res_scale
    res = c(res, "conv_after_body") + x
    for j, r in {2: [(0, 2)], 3: [(0, 3)], 4: [(0, 2), (2, 2)]}[scale]:
        res = F.pixel_shuffle(c(res, f"upsample.{j}"), r)
    return c(res, "conv_last") / 255.0 + mean


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_mean_shift_equivalence(scale: int) -> None:
    net = build("edsr_baseline", scale, seed=scale)
    sd = net.state_dict()
    x = torch.rand(2, 3, 7, 5)
    with torch.no_grad():
        ours = net(x)
        original = edsr_pytorch_forward(sd, x * 255.0, 16, 1.0, scale)
        ours_basicsr = {k: v for k, v in EXPECTED[("edsr_baseline", scale)].items() if "_mean." not in k}
        basicsr = edsr_basicsr_forward(rename(sd, ours_basicsr, edsr_basicsr_keys(16, 64, scale)), x, 16, 1.0, scale)
    assert ours.abs().max() > 0.1  # a non-trivial function
    torch.testing.assert_close(ours * 255.0, original, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(ours, basicsr, rtol=1e-5, atol=1e-5)


def test_edsr_large_mean_shift_equivalence(edsr_large_x4) -> None:
    sd = edsr_large_x4.state_dict()
    x = torch.rand(1, 3, 3, 4)
    with torch.no_grad():
        ours = edsr_large_x4(x)
        original = edsr_pytorch_forward(sd, x * 255.0, 32, 0.1, 4)
    torch.testing.assert_close(ours * 255.0, original, rtol=1e-5, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# 4. output shapes for odd-sized inputs

@pytest.mark.parametrize("name,scale", sorted(k for k in EXPECTED if k[0] != "edsr"))
def test_output_shape_odd_input(name: str, scale: int) -> None:
    net = create_model(name, scale)  # wrapped: RGB [0, 1] in and out (RDN goes through PixelRangeWrapper)
    with torch.no_grad():
        y = net(torch.rand(1, 3, 7, 5))
    assert y.shape == (1, 3, 7 * scale, 5 * scale)
    assert torch.isfinite(y).all()


def test_output_shape_odd_input_edsr_large(edsr_large_x4) -> None:
    with torch.no_grad():
        y = edsr_large_x4(torch.rand(1, 3, 3, 5))
    assert y.shape == (1, 3, 12, 20)


def test_rdn_is_wrapped_to_unit_range() -> None:
    wrapped = create_model("rdn", 2)
    bare = wrapped.net
    x = torch.rand(1, 3, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), bare(x * 255.0) / 255.0)


def test_srresnet_normalisation() -> None:
    """srq's SRResNet == the tutorial's convention: imagenet-normalised input, [-1, 1] output."""
    net = build("srresnet", 4)
    randomize_(net)
    x = torch.rand(1, 3, 5, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # utils.py imagenet_mean / imagenet_std
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        h = net.conv_block1((x - mean) / std)
        h = h + net.conv_block2(net.residual_blocks(h))
        ref = net.conv_block3(net.subpixel_convolutional_blocks(h))  # in [-1, 1] (tanh)
        torch.testing.assert_close(net(x), (ref + 1) / 2)
