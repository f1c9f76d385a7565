"""The pure-PyTorch selective scan against a naive sequential loop written here (float64).

Covers every operand form of ``selective_scan_fn`` (constant, time-varying and grouped B/C; with and
without D, z, delta_bias, softplus), chunk and block boundaries (padding, several blocks, carried
state), a long sequence, extreme decay rates, gradients (gradcheck), and — on a CUDA machine with
``mamba_ssm`` — agreement with the fused kernel.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from srq.models.selective_scan import cuda_selective_scan_fn, selective_scan, selective_scan_chunked


pytestmark = pytest.mark.usefixtures("single_thread")


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t; y_t = C_t·h_t + D u_t; y ⊙ silu(z), step by step in float64."""
    u, delta, A = u.double(), delta.double(), A.double()
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, length = u.shape

    def at(M, t):  # operand for step t, broadcastable to (b, d, n)
        if M.dim() == 2:
            return M.double()[None]
        if M.dim() == 3:
            return M.double()[:, None, :, t]
        return M.double()[..., t].repeat_interleave(d // M.shape[1], dim=1)

    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * at(B, t)
        ys.append((h * at(C, t)).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def make_inputs(b, d, n, length, bc, seed=0, a_scale=1.0, dt_shift=0.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, length, generator=g)
    delta = torch.randn(b, d, length, generator=g) + dt_shift
    A = -torch.exp(torch.randn(d, n, generator=g) * a_scale)
    if bc == "const":
        B, C = torch.randn(d, n, generator=g), torch.randn(d, n, generator=g)
    elif bc == "var":
        B, C = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    else:  # grouped, g = bc
        B, C = torch.randn(b, bc, n, length, generator=g), torch.randn(b, bc, n, length, generator=g)
    extras = dict(D=torch.randn(d, generator=g), z=torch.randn(b, d, length, generator=g),
                  delta_bias=torch.randn(d, generator=g))
    return (u, delta, A, B, C), extras


CASES = [  # b, d, n, L, B/C form, use D, z, delta_bias, softplus
    (2, 8, 4, 100, "var", True, True, True, True),
    (1, 6, 3, 37, 3, True, False, True, True),
    (2, 4, 2, 300, "const", False, True, False, True),
    (1, 12, 5, 257, 4, False, False, False, False),
    (3, 5, 1, 1, "var", True, True, True, True),
    (1, 48, 8, 1000, "var", True, False, True, True),
]


@pytest.mark.parametrize("b,d,n,length,bc,use_d,use_z,use_bias,softplus", CASES)
@pytest.mark.parametrize("chunk,block", [(None, None), (8, 16), (16, 1000)])
def test_matches_sequential_loop(b, d, n, length, bc, use_d, use_z, use_bias, softplus, chunk, block):
    args, ex = make_inputs(b, d, n, length, bc)
    if not softplus:
        args = (args[0], F.softplus(args[1]), *args[2:])  # Δ must be positive
    kwargs = dict(D=ex["D"] if use_d else None, z=ex["z"] if use_z else None,
                  delta_bias=ex["delta_bias"] if use_bias else None, delta_softplus=softplus)
    ref, h_ref = naive_scan(*args, **kwargs)
    block_elems = {} if block is None else {"block_elems": b * d * n * block}
    y, h = selective_scan_chunked(*args, **kwargs, return_last_state=True, chunk_size=chunk, **block_elems)
    assert y.shape == (b, d, length) and y.dtype == torch.float32
    assert rel_err(y, ref) < 1e-5
    assert rel_err(h, h_ref) < 1e-5


def test_long_sequence_in_bounded_blocks():
    args, ex = make_inputs(1, 3, 2, 16384, "var", seed=1, dt_shift=-3.0)  # slow decay: long memory
    ref, h_ref = naive_scan(*args, D=ex["D"], delta_bias=ex["delta_bias"], delta_softplus=True)
    for block_elems in (1 << 21, 3 * 2 * 1000):  # one block / 17 blocks with the state carried over
        y, h = selective_scan_chunked(*args, D=ex["D"], delta_bias=ex["delta_bias"], delta_softplus=True,
                                      return_last_state=True, block_elems=block_elems)
        assert rel_err(y, ref) < 1e-5
        assert rel_err(h, h_ref) < 1e-5


@pytest.mark.parametrize("a_scale,dt_shift", [(3.0, 3.0), (3.0, -12.0), (0.0, 25.0)])
def test_extreme_decays_are_stable(a_scale, dt_shift):
    """Per-step decays from e^-3000 (instant forgetting) to 1 - 1e-8 (no forgetting) in one tensor."""
    args, ex = make_inputs(2, 16, 8, 700, "var", seed=2, a_scale=a_scale, dt_shift=dt_shift)
    kwargs = dict(D=ex["D"], z=ex["z"], delta_softplus=True)
    ref, h_ref = naive_scan(*args, **kwargs)
    y, h = selective_scan_chunked(*args, **kwargs, return_last_state=True, chunk_size=64)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert rel_err(y, ref) < 1e-5
    assert rel_err(h, h_ref) < 1e-5


def test_half_precision_inputs_computed_in_float32():
    args, ex = make_inputs(1, 4, 3, 50, "var", seed=3)
    half = tuple(t.to(torch.bfloat16) for t in args)
    y = selective_scan_chunked(*half, delta_softplus=True)
    ref, _ = naive_scan(*(t.float() for t in half), delta_softplus=True)
    assert y.dtype == torch.bfloat16
    assert rel_err(y.float(), ref) < 1e-2  # only the final rounding to bfloat16


def test_gradcheck_float64():
    args, ex = make_inputs(1, 3, 2, 11, 1, seed=4)
    inputs = [t.double().requires_grad_() for t in (*args, ex["D"], ex["z"], ex["delta_bias"])]

    def f(u, delta, A, B, C, D, z, bias):
        return selective_scan_chunked(u, delta, A, B, C, D, z, bias, True, chunk_size=4, block_elems=3 * 2 * 8)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_gradients_match_sequential_loop():
    args, ex = make_inputs(2, 4, 3, 40, "var", seed=5)
    a = [t.clone().requires_grad_() for t in args]
    b = [t.clone().requires_grad_() for t in args]
    selective_scan_chunked(*a, delta_softplus=True, chunk_size=8).square().sum().backward()
    naive_scan(*b, delta_softplus=True)[0].square().sum().backward()
    for x, y in zip(a, b):
        assert rel_err(x.grad, y.grad.double()) < 1e-5


def test_dispatch_uses_pytorch_scan_on_cpu():
    args, ex = make_inputs(1, 4, 2, 30, "var", seed=6)
    assert torch.equal(selective_scan(*args, delta_softplus=True), selective_scan_chunked(*args, delta_softplus=True))


def test_rejects_bad_shapes():
    args, _ = make_inputs(1, 4, 2, 30, "var")
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_chunked(args[0], args[1], args[2], torch.randn(1, 3, 2, 30), args[4])


@pytest.mark.skipif(not torch.cuda.is_available() or cuda_selective_scan_fn() is None,
                    reason="needs a CUDA GPU and mamba_ssm")
@pytest.mark.parametrize("bc", ["var", 4])
def test_matches_mamba_ssm_cuda_kernel(bc):
    args, ex = make_inputs(2, 16, 8, 4000, bc, seed=7)
    dev = [t.cuda() for t in args]
    kwargs = dict(D=ex["D"].cuda(), z=ex["z"].cuda(), delta_bias=ex["delta_bias"].cuda(), delta_softplus=True)
    kernel = cuda_selective_scan_fn()(*dev, **kwargs, return_last_state=True)
    ours = selective_scan_chunked(*dev, **kwargs, return_last_state=True)
    assert rel_err(ours[0].cpu(), kernel[0].cpu().double()) < 1e-4
    assert rel_err(ours[1].cpu(), kernel[1].cpu().double()) < 1e-4
    assert torch.equal(selective_scan(*dev, **kwargs), kernel[0])
