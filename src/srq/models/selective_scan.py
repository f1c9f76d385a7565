"""Selective scan (the Mamba S6 recurrence) in pure PyTorch: exact, chunked, any device.

For every batch ``b``, channel ``d`` and state ``n``::

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t        (h_0 = 0)
    y_t = C_t · h_t + D u_t,        out_t = y_t ⊙ silu(z_t)

with ``Δ = softplus(delta + delta_bias)`` when ``delta_softplus`` is set. The signature and the
semantics are those of ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (real ``A``).

:func:`selective_scan` uses the ``mamba_ssm`` CUDA kernel when it is importable and the tensors are on
a CUDA device, and :func:`selective_scan_chunked` otherwise. The chunked scan is exact — it evaluates
the same recurrence, only in another order, so it agrees with a sequential loop to float32 rounding
(≈1e-6 relative) whatever the decay rates — and it is fast on a few CPU cores:

* the sequence is cut into blocks of bounded size (``block_elems`` elements of the ``(b, d, L, n)``
  state tensor), processed one after another with the state carried over, so memory does not grow
  with the sequence length;
* each block is cut into ``nc`` chunks of ``T`` steps; the recurrence runs inside all chunks at once
  (``T`` vectorised steps over ``b·nc`` chunks, starting from a zero state), then the chunk-end states
  are chained across chunks (``nc`` small steps) and the incoming state of every chunk is added back
  through the chunk's cumulative decay. ``T ≈ √(block length)`` keeps the number of Python-level steps
  small.

Decays are only ever formed as ``exp(Δ·A)`` and ``exp(A·ΣΔ)``, exponents ≤ 0 for Δ ≥ 0 and A ≤ 0 (no
``exp(-cumsum)`` rescaling trick), so nothing can overflow whatever the decay rates, and underflow to
0 is the correct limit. Everything is differentiable with autograd (a non-in-place path is taken
when gradients are needed).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch.nn import functional as F

__all__ = ["selective_scan", "selective_scan_chunked", "cuda_selective_scan_fn", "DEFAULT_BLOCK_ELEMS"]

DEFAULT_BLOCK_ELEMS = 1 << 21  # elements of one (b, d, block, n) work tensor: 8 MiB in float32


@functools.lru_cache(maxsize=1)
def cuda_selective_scan_fn() -> Callable | None:
    """``mamba_ssm``'s fused CUDA ``selective_scan_fn`` if it can be imported, else ``None``."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken CUDA extension build
        return None
    return selective_scan_fn


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False):
    """Selective scan with ``selective_scan_fn``'s signature; CUDA kernel when available.

    See :func:`selective_scan_chunked` for shapes. The ``mamba_ssm`` kernel is used only for CUDA
    tensors and only if ``mamba_ssm`` imports; everything else runs the exact chunked scan.
    """
    if u.is_cuda:
        kernel = cuda_selective_scan_fn()
        if kernel is not None:
            return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _groups(M: torch.Tensor, name: str, b: int, d: int, n: int, length: int) -> int:
    """Number of groups of a time-varying B/C (``(b, n, L)`` → 1, ``(b, g, n, L)`` → g); 0 if constant."""
    if M.dim() == 2:
        if tuple(M.shape) != (d, n):
            raise ValueError(f"{name} must be (d, n) = {(d, n)} when constant, got {tuple(M.shape)}")
        return 0
    if M.dim() == 3:
        M = M.unsqueeze(1)
    if M.dim() != 4 or M.shape[0] != b or M.shape[2] != n or M.shape[3] != length or d % M.shape[1]:
        raise ValueError(f"{name} must be (d, n), (b, n, L) or (b, g, n, L) with g dividing d; got {tuple(M.shape)} "
                         f"for b={b}, d={d}, n={n}, L={length}")
    return M.shape[1]


def _chunk_size(length: int) -> int:
    """Chunk length T: a power of two near √length (between 16 and 256), or ``length`` if shorter."""
    if length <= 16:
        return length
    return int(min(256, max(16, 2 ** round(math.log2(math.sqrt(length))))))


def _to_chunks(x: torch.Tensor, T: int, nc: int) -> torch.Tensor:
    """(b, *f, Lb) → (T, b·nc, *f), zero-padding the time axis to ``nc·T``."""
    pad = nc * T - x.shape[-1]
    if pad:
        x = F.pad(x, (0, pad))
    b, feat = x.shape[0], x.shape[1:-1]
    x = x.reshape(b, *feat, nc, T)
    k = x.dim()
    x = x.permute(k - 1, 0, k - 2, *range(1, k - 2))  # (T, b, nc, *f)
    return x.reshape(T, b * nc, *feat).contiguous()


def selective_scan_chunked(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                           delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                           return_last_state: bool = False, *, chunk_size: int | None = None,
                           block_elems: int = DEFAULT_BLOCK_ELEMS):
    """Exact selective scan in pure PyTorch (any device), chunked for speed and bounded memory.

    Args:
        u: input, (b, d, L).
        delta: time steps before bias/softplus, (b, d, L).
        A: (d, n), real (``-exp(A_log)`` in Mamba).
        B, C: constant (d, n), or time-varying (b, n, L), or grouped (b, g, n, L) with g dividing d
            (channel block ``i·d/g … (i+1)·d/g - 1`` uses group i).
        D: skip weight (d,) or None.
        z: gate (b, d, L) or None; the output is multiplied by ``silu(z)``.
        delta_bias: (d,) added to ``delta`` before the softplus, or None.
        delta_softplus: apply ``softplus`` to ``delta (+ delta_bias)``.
        return_last_state: also return the final state h_L, (b, d, n), float32 (float64 inputs: float64).
        chunk_size: steps per chunk T (default ≈ √block length, a power of two in [16, 256]).
        block_elems: at most this many elements in one (b, d, block, n) work tensor (bounds memory).
    Returns:
        out (b, d, L) in ``u``'s dtype, and the last state if asked.
    """
    if A.is_complex():
        raise NotImplementedError("complex A is not supported by the PyTorch selective scan")
    b, d, length = u.shape
    n = A.shape[-1]
    if tuple(delta.shape) != (b, d, length) or tuple(A.shape) != (d, n):
        raise ValueError(f"shape mismatch: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}")
    gB, gC = _groups(B, "B", b, d, n, length), _groups(C, "C", b, d, n, length)
    dtype_in = u.dtype
    wdt = torch.float64 if dtype_in == torch.float64 else torch.float32

    u_w = u.to(wdt)
    dt = delta.to(wdt)
    if delta_bias is not None:
        dt = dt + delta_bias.to(wdt)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A_w = A.to(wdt)
    du = dt * u_w
    Bv = B.to(wdt) if gB == 0 else (B if B.dim() == 4 else B.unsqueeze(1)).to(wdt)
    Cv = C.to(wdt) if gC == 0 else (C if C.dim() == 4 else C.unsqueeze(1)).to(wdt)

    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias))
    block = max(1, block_elems // max(1, b * d * n))
    T = chunk_size or _chunk_size(min(length, block))
    block = max(T, block // T * T)

    h = u_w.new_zeros(b, d, n)
    ys = []
    for s0 in range(0, length, block):
        s1 = min(s0 + block, length)
        y, h = _scan_block(dt[..., s0:s1], du[..., s0:s1], A_w,
                           Bv if gB == 0 else Bv[..., s0:s1], Cv if gC == 0 else Cv[..., s0:s1],
                           gB, gC, h, min(T, s1 - s0), needs_grad)
        ys.append(y)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
    if D is not None:
        y = y + u_w * D.to(wdt)[:, None]
    if z is not None:
        y = y * F.silu(z.to(wdt))
    out = y.to(dtype_in)
    return (out, h) if return_last_state else out


def _scan_block(dt: torch.Tensor, du: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                gB: int, gC: int, h0: torch.Tensor, T: int, needs_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan one block of Lb steps starting from state ``h0`` (b, d, n); returns y (b, d, Lb) and h_Lb."""
    b, d, Lb = dt.shape
    n = A.shape[-1]
    nc = -(-Lb // T)
    M = b * nc
    dt_c, du_c = _to_chunks(dt, T, nc), _to_chunks(du, T, nc)  # (T, M, d); padded steps have Δ = 0

    a = torch.exp(dt_c.unsqueeze(-1) * A)  # (T, M, d, n) decays in (0, 1]
    if gB == 0:
        x = du_c.unsqueeze(-1) * B  # (T, M, d, n)
    else:
        Bc = _to_chunks(B, T, nc)  # (T, M, g, n)
        x = (du_c.view(T, M, gB, d // gB, 1) * Bc.unsqueeze(-2)).view(T, M, d, n)

    # 1) recurrence inside every chunk from a zero state, all chunks at once;
    #    E_t = exp(A · Σ_{s≤t} Δ_s) is the decay from the chunk start to step t (≤ 1, no overflow)
    E = torch.exp(torch.cumsum(dt_c, dim=0, dtype=torch.float64).to(dt_c.dtype).unsqueeze(-1) * A)
    if needs_grad:  # unbind: one backward node for all T steps (indexing x[t] would add T full-size zero grads)
        xs, decays = x.unbind(0), a.unbind(0)
        hs = [xs[0]]
        for t in range(1, T):
            hs.append(torch.addcmul(xs[t], decays[t], hs[-1]))
        x = torch.stack(hs)
    else:
        for t in range(1, T):
            x[t].addcmul_(a[t], x[t - 1])

    # 2) chain the chunk-end states across chunks (per batch element), 3) add them back
    x_end, E_end = x[-1].view(b, nc, d, n), E[-1].view(b, nc, d, n)
    h_in = []
    h = h0
    for x_c, E_c in zip(x_end.unbind(1), E_end.unbind(1)):
        h_in.append(h)
        h = torch.addcmul(x_c, E_c, h)
    if nc > 1 or bool(h0.any()):
        h_start = torch.stack(h_in, dim=1).view(1, M, d, n)
        x = x + E * h_start if needs_grad else x.addcmul_(E, h_start)

    # 4) y_t = C_t · h_t
    if gC == 0:
        y = (x * C).sum(-1)
    else:
        Cc = _to_chunks(C, T, nc)  # (T, M, g, n)
        y = torch.matmul(x.reshape(T * M * gC, d // gC, n), Cc.view(T * M * gC, n, 1))
    y = y.view(T, b, nc, d).permute(1, 3, 2, 0).reshape(b, d, nc * T)[..., :Lb]
    return y, h
