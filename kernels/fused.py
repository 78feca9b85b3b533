"""Whole-chain fused kernels for the GPU: every step of ULA (and its noise-free flow), MALA, kinetic
Langevin (OBABO) or HMC on an analytic or small-MLP energy in one launch.

The Triton twin of csrc/cpu/fused.cpp, with the same arguments and results
(``pysampler::fused_chain``'s schema in csrc/ops.cpp). Each program owns ``BLOCK_N`` chains and
keeps their state, a (BLOCK_N, BLOCK_D) tile with BLOCK_D ≥ d, in registers for all the steps:
energy, gradient, update, Philox noise and the MH test never leave the chip; only the optional
trace is written between steps. Energies (the terms ``pysampler.fused.fused_target`` passes):

* ``gaussian_diag`` (mean (d,), 1/scale² (d,)): ∇U = (x − μ)/σ², U = ½ Σ ∇U·(x − μ);
* ``gaussian_full`` (mean (d,), precision P (d, d)): ∇U = (x − μ) P, U likewise;
* ``mixture`` (means (K, d), 1/σ² (K, d), log coefficients (K,)): U = −logsumexp_k l_k,
  ∇U = Σ_k w_k (x − μ_k)/σ_k² / Σ_k w_k, with components more than e^64 below the top one
  weighing 0 (as the CPU kernel and ``GaussianMixture.energy_and_grad``).

The random stream is the step-wise samplers' (step i uses the counters its step ops would:
ULA's normal for element j of chain n at offset + i·N·d + n·d + j, MALA/HMC's uniform after the
N·d normals, OBABO's second normals after the first), so a fused and a step-wise run from one seed
agree to float tolerance.

* ``mlp`` (MLPEnergy: up to 4 Linear layers): hidden layers as ``tl.dot`` of the (BLOCK_N, width)
  activations with the zero-padded weights (``input_precision="ieee"``: no TF32), the activation's
  slope kept in registers, and the input gradient by hand, δ ← (δ·a'(z_l)) W_l from the top.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import INTERPRETED, _pow2_at_least, join_scalar, launch, load_rng, mh_test, ou_coefficients, split_scalar, to_compute

__all__ = ["TARGETS", "ALGORITHMS", "fused_chain"]

#: energy kinds this module fuses (fused_target's names), and the kernel's codes for them
TARGETS = {"gaussian_diag": 0, "gaussian_full": 1, "mixture": 2, "mlp": 3}
#: samplers (fused_target's names) and their codes
ALGORITHMS = {"ula": 0, "mala": 1, "kinetic": 2, "hmc": 3}

# Chains per program on the GPU: the state tiles (x, ∇U, proposal, its gradient, momenta) of
# BLOCK_N × BLOCK_D values stay in registers up to about this many values per tile. Untuned.
_GPU_TILE = 1024
_GPU_WARPS = 4
# The interpreter costs per program: one program takes as many chains as fit in this many values.
_INTERPRETER_TILE = 1 << 16
_MAX_DIM = 256


@triton.jit
def _finite(v):
    return (v == v) & (tl.abs(v) < float("inf"))


@triton.jit
def _energy(x, cols, col_mask, D, K, p0_ptr, p1_ptr, p2_ptr, KIND: tl.constexpr, F64: tl.constexpr):
    """(U (BLOCK_N,), ∇U (BLOCK_N, BLOCK_D)) of the tile x; padding columns of x are 0 and stay 0."""
    if KIND == 0:  # gaussian_diag
        mean = to_compute(tl.load(p0_ptr + cols, mask=col_mask, other=0.0), F64)
        inv_var = to_compute(tl.load(p1_ptr + cols, mask=col_mask, other=0.0), F64)
        r = x - mean[None, :]
        g = r * inv_var[None, :]
        u = 0.5 * tl.sum(g * r, axis=1)
    elif KIND == 1:  # gaussian_full: g_i = sum_j r_j P[j, i], one row of P at a time
        mean = to_compute(tl.load(p0_ptr + cols, mask=col_mask, other=0.0), F64)
        r = x - mean[None, :]
        g = tl.zeros_like(r)
        for j in range(D):
            r_j = tl.sum(tl.where(cols[None, :] == j, r, 0.0), axis=1)
            p_row = to_compute(tl.load(p1_ptr + j * D + cols, mask=col_mask, other=0.0), F64)
            g = g + r_j[:, None] * p_row[None, :]
        u = 0.5 * tl.sum(g * r, axis=1)
    else:  # mixture: the top component first, then the weights relative to it
        top = tl.full([x.shape[0]], -float("inf"), x.dtype)
        for k in range(K):
            mean = to_compute(tl.load(p0_ptr + k * D + cols, mask=col_mask, other=0.0), F64)
            inv_var = to_compute(tl.load(p1_ptr + k * D + cols, mask=col_mask, other=0.0), F64)
            r = x - mean[None, :]
            log_w = to_compute(tl.load(p2_ptr + k), F64) - 0.5 * tl.sum(r * r * inv_var[None, :], axis=1)
            top = tl.maximum(top, log_w)
        total = tl.zeros_like(top)
        acc = tl.zeros_like(x)
        for k in range(K):
            mean = to_compute(tl.load(p0_ptr + k * D + cols, mask=col_mask, other=0.0), F64)
            inv_var = to_compute(tl.load(p1_ptr + k * D + cols, mask=col_mask, other=0.0), F64)
            r = x - mean[None, :]
            rel = to_compute(tl.load(p2_ptr + k), F64) - 0.5 * tl.sum(r * r * inv_var[None, :], axis=1) - top
            # below e^-64 of the top component: weight 0 (no denormals; see csrc/cpu/fused.cpp)
            w = tl.where(rel < -64.0, 0.0, tl.exp(tl.maximum(rel, -64.0)))
            total = total + w
            acc = acc + w[:, None] * (r * inv_var[None, :])
        g = acc * (1.0 / total)[:, None]
        u = 0.0 - (top + tl.log(total))
    return u, g


@triton.jit
def _target(
    x, cols, col_mask, D, K, p0_ptr, p1_ptr, p2_ptr, KIND: tl.constexpr, F64: tl.constexpr,
    wt0, w0, b0, wt1, w1, b1, wt2, w2, b2, w_top, b_top, prm0, prm1, prm2, thr0, thr1, thr2, prior,
    NL: tl.constexpr, P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr, PT: tl.constexpr,
    ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
):
    """The energy of kind KIND (0-2: _energy's analytic ones, 3: an MLP) at the tile x."""
    if KIND == 3:
        return _mlp_energy(x, wt0, w0, b0, wt1, w1, b1, wt2, w2, b2, w_top, b_top, prm0, prm1, prm2,
                           thr0, thr1, thr2, prior, NL, P0, P1, P2, P3, PT, ACT0, ACT1, ACT2, F64)
    else:
        return _energy(x, cols, col_mask, D, K, p0_ptr, p1_ptr, p2_ptr, KIND, F64)


@triton.jit
def _log1p(u):
    """log(1 + u) without cancellation for small u (Kahan's trick; tl has no log1p)."""
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * u / (w - 1.0))


@triton.jit
def _activation(z, ACT: tl.constexpr, param, threshold):
    """(a(z), a'(z)) for MLPEnergy's activation codes (pysampler.fused: silu 0, tanh 1, softplus 2,
    relu 3, leaky_relu 4, gelu 5, gelu_tanh 6), as pysampler.targets.activation_and_slope."""
    if ACT == 0:
        sig = 1.0 / (1.0 + tl.exp(-z))
        a = z * sig
        da = sig * (1.0 + z * (1.0 - sig))
    elif ACT == 1:
        t = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)  # tanh, saturating cleanly at +-1
        a = t
        da = 1.0 - t * t
    elif ACT == 2:  # log(1 + e^{beta z}) / beta, z itself above the threshold
        bz = param * z
        linear = bz > threshold
        a = tl.where(linear, z, _log1p(tl.exp(tl.where(linear, 0.0, bz))) / param)
        da = tl.where(linear, 1.0, 1.0 / (1.0 + tl.exp(-bz)))
    elif ACT == 3:
        a = tl.where(z > 0, z, 0.0)
        da = tl.where(z > 0, 1.0, 0.0)
    elif ACT == 4:
        a = tl.where(z > 0, z, param * z)
        da = tl.where(z > 0, 1.0, param + 0.0 * z)
    elif ACT == 5:  # z Phi(z)
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        a = z * cdf
        da = cdf + z * tl.exp(-0.5 * z * z) * 0.3989422804014327
    else:  # z (1 + tanh(c (z + 0.044715 z^3))) / 2
        inner = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        t = 1.0 - 2.0 / (tl.exp(2.0 * inner) + 1.0)
        a = 0.5 * z * (1.0 + t)
        da = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
    return a, da


@triton.jit
def _dense(h, wt_ptr, b_ptr, PI: tl.constexpr, PO: tl.constexpr, F64: tl.constexpr):
    """h (BLOCK_N, PI) @ W^T (PI, PO) + b: one hidden layer's products on the tensor cores' dot."""
    ri = tl.arange(0, PI)
    ro = tl.arange(0, PO)
    wt = to_compute(tl.load(wt_ptr + ri[:, None] * PO + ro[None, :]), F64)
    b = to_compute(tl.load(b_ptr + ro), F64)
    return tl.dot(h, wt, input_precision="ieee") + b[None, :]


@triton.jit
def _back(delta, w_ptr, PO: tl.constexpr, PI: tl.constexpr, F64: tl.constexpr):
    """delta (BLOCK_N, PO) @ W (PO, PI): the gradient through one layer's weights."""
    ro = tl.arange(0, PO)
    ri = tl.arange(0, PI)
    w = to_compute(tl.load(w_ptr + ro[:, None] * PI + ri[None, :]), F64)
    return tl.dot(delta, w, input_precision="ieee")


@triton.jit
def _mlp_energy(
    x, wt0, w0, b0, wt1, w1, b1, wt2, w2, b2, w_top, b_top, prm0, prm1, prm2, thr0, thr1, thr2, prior,
    NL: tl.constexpr, P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr, PT: tl.constexpr,
    ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr, F64: tl.constexpr,
):
    """U and ∇U of an MLPEnergy with NL Linear layers (hidden widths padded to P1..P3 with zero
    weights): forward keeping each slope a'(z_l), then δ ← (δ·a'(z_l)) W_l from the top row."""
    h = x
    if NL >= 2:
        h, s1 = _activation(_dense(h, wt0, b0, P0, P1, F64), ACT0, prm0, thr0)
    if NL >= 3:
        h, s2 = _activation(_dense(h, wt1, b1, P1, P2, F64), ACT1, prm1, thr1)
    if NL >= 4:
        h, s3 = _activation(_dense(h, wt2, b2, P2, P3, F64), ACT2, prm2, thr2)
    top = to_compute(tl.load(w_top + tl.arange(0, PT)), F64)
    u = tl.sum(h * top[None, :], axis=1) + to_compute(tl.load(b_top), F64)
    delta = tl.zeros_like(h) + top[None, :]
    if NL >= 4:
        delta = _back(delta * s3, w2, P3, P2, F64)
    if NL >= 3:
        delta = _back(delta * s2, w1, P2, P1, F64)
    if NL >= 2:
        delta = _back(delta * s1, w0, P1, P0, F64)
    u = u + 0.5 * prior * tl.sum(x * x, axis=1)
    return u, delta + prior * x


@triton.jit
def _normals(seed, base, rows, cols, mask, D, dtype: tl.constexpr):
    """The stream's normals for the tile at counter base + row·D + col (0 in padding)."""
    idx = rows.to(tl.int64)[:, None] * D + cols[None, :]
    z = tl.randn(seed, base + idx).to(dtype)
    return tl.where(mask, z, 0.0)


@triton.jit
def _fused_chain_kernel(
    x_ptr, u_ptr, g_ptr, v_ptr, h_ptr, gamma_ptr, frozen_ptr, rng_ptr,
    x_out, u_out, g_out, v_out, frozen_out, bad_out, acc_out, trace_ptr,
    p0_ptr, p1_ptr, p2_ptr,
    wt0, w0, b0, wt1, w1, b1, wt2, w2, b2, w_top, b_top, prm0, prm1, prm2, thr0, thr1, thr2, prior,
    N, D, K, n_steps, record_from, thin, n_leapfrog, noise_hi, noise_lo,
    ALGO: tl.constexpr, KIND: tl.constexpr, NOISE: tl.constexpr, TRACE: tl.constexpr, F64: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    NL: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr, PT: tl.constexpr,
    ACT0: tl.constexpr, ACT1: tl.constexpr, ACT2: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    row_mask = rows < N
    col_mask = cols < D
    mask = row_mask[:, None] & col_mask[None, :]
    offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = to_compute(tl.load(x_ptr + offs, mask=mask, other=0.0), F64)
    g = to_compute(tl.load(g_ptr + offs, mask=mask, other=0.0), F64)
    u = to_compute(tl.load(u_ptr + rows, mask=row_mask, other=0.0), F64)
    h = to_compute(tl.load(h_ptr + rows, mask=row_mask, other=1.0), F64)
    h2 = h[:, None]
    frozen = tl.load(frozen_ptr + rows, mask=row_mask, other=0) != 0
    bad_step = tl.zeros([BLOCK_N], tl.int64)
    accepted = tl.zeros([BLOCK_N], tl.int64)
    seed, offset = load_rng(rng_ptr)
    nd = N.to(tl.int64) * D
    if ALGO == 0:  # ULA: c = sqrt(2h) * noise_scale (pysampler::ula_step)
        c = tl.sqrt(2.0 * h) * join_scalar(noise_hi, noise_lo, F64)
        per_step = nd
    elif ALGO == 1:  # MALA
        c = tl.sqrt(2.0 * h)
        per_step = nd + N
    elif ALGO == 2:  # kinetic: exact OU coefficients (pysampler::kinetic_oba)
        a, c = ou_coefficients(h, to_compute(tl.load(gamma_ptr + rows, mask=row_mask, other=1.0), F64))
        v = to_compute(tl.load(v_ptr + offs, mask=mask, other=0.0), F64)
        per_step = 2 * nd
    else:  # HMC
        c = tl.sqrt(2.0 * h)  # unused
        per_step = nd + N
    for i in range(n_steps):
        base = offset + i * per_step
        if ALGO == 0 or ALGO == 1:
            y = x - h2 * g
            if ALGO == 1 or NOISE:
                y = y + c[:, None] * _normals(seed, base, rows, cols, mask, D, x.dtype)
            u_y, g_y = _target(
                y, cols, col_mask, D, K, p0_ptr, p1_ptr, p2_ptr, KIND, F64, wt0, w0, b0, wt1, w1, b1, wt2, w2, b2,
                w_top, b_top, prm0, prm1, prm2, thr0, thr1, thr2, prior, NL, BLOCK_D, P1, P2, P3, PT, ACT0, ACT1, ACT2,
            )
        elif ALGO == 2:  # O(h/2) B(h/2) A(h), gradient, B(h/2) O(h/2)
            v_y = a[:, None] * v + c[:, None] * _normals(seed, base, rows, cols, mask, D, x.dtype)
            v_y = v_y - 0.5 * h2 * g
            y = x + h2 * v_y
            u_y, g_y = _target(
                y, cols, col_mask, D, K, p0_ptr, p1_ptr, p2_ptr, KIND, F64, wt0, w0, b0, wt1, w1, b1, wt2, w2, b2,
                w_top, b_top, prm0, prm1, prm2, thr0, thr1, thr2, prior, NL, BLOCK_D, P1, P2, P3, PT, ACT0, ACT1, ACT2,
            )
            v_y = v_y - 0.5 * h2 * g_y
            v_y = a[:, None] * v_y + c[:, None] * _normals(seed, base + nd, rows, cols, mask, D, x.dtype)
        else:  # HMC: p0 ~ N(0, I); L leapfrog steps with merged kicks; closing half kick in the test
            p0 = _normals(seed, base, rows, cols, mask, D, x.dtype)
            p = p0
            y = x
            g_y = g
            u_y = u
            for leap in range(n_leapfrog):
                kick = tl.where(leap == 0, 0.5 * h2, h2)
                p = p - kick * g_y
                y = y + h2 * p
                u_y, g_y = _target(
                    y, cols, col_mask, D, K, p0_ptr, p1_ptr, p2_ptr, KIND, F64, wt0, w0, b0, wt1, w1, b1, wt2, w2, b2,
                    w_top, b_top, prm0, prm1, prm2, thr0, thr1, thr2, prior, NL, BLOCK_D, P1, P2, P3, PT, ACT0, ACT1, ACT2,
                )
        if ALGO == 0 or ALGO == 2:  # unadjusted: a non-finite chain freezes at its last finite state
            ok = _finite(y) & _finite(g_y)
            if ALGO == 2:
                ok = ok & _finite(v_y)
            finite = (tl.sum(tl.where(mask & ~ok, 1, 0), axis=1) == 0) & _finite(u_y)
            newly_bad = ~finite & ~frozen
            bad_step = tl.where(newly_bad, i + 1, bad_step)
            frozen = frozen | newly_bad
            keep = frozen
        else:  # MH test: MALA's proposal ratio, HMC's total energy
            if ALGO == 1:
                diff = y - x
                fwd = diff + h2 * g
                bwd = h2 * g_y - diff
                log_alpha = u - u_y - (tl.sum(bwd * bwd, axis=1) - tl.sum(fwd * fwd, axis=1)) / (4.0 * h)
            else:
                p_end = p - 0.5 * h2 * g_y
                h0 = u + 0.5 * tl.sum(p0 * p0, axis=1)
                h1 = u_y + 0.5 * tl.sum(p_end * p_end, axis=1)
                y_finite = tl.sum(tl.where(mask & ~_finite(y), 1, 0), axis=1) == 0
                log_alpha = tl.where(y_finite, h0 - h1, -float("inf"))
            _, take = mh_test(log_alpha, seed, base + nd, rows)
            if i >= record_from:
                accepted = accepted + take.to(tl.int64)
            keep = ~take
        x = tl.where(keep[:, None], x, y)
        g = tl.where(keep[:, None], g, g_y)
        u = tl.where(keep, u, u_y)
        if ALGO == 2:
            v = tl.where(keep[:, None], v, v_y)
        if TRACE:
            if i >= record_from:
                if (i - record_from + 1) % thin == 0:
                    slot = (i - record_from + 1) // thin - 1
                    tl.store(trace_ptr + slot.to(tl.int64) * nd + offs, x.to(trace_ptr.dtype.element_ty), mask=mask)
    tl.store(x_out + offs, x.to(x_out.dtype.element_ty), mask=mask)
    tl.store(g_out + offs, g.to(g_out.dtype.element_ty), mask=mask)
    tl.store(u_out + rows, u.to(u_out.dtype.element_ty), mask=row_mask)
    if ALGO == 2:
        tl.store(v_out + offs, v.to(v_out.dtype.element_ty), mask=mask)
    tl.store(frozen_out + rows, frozen, mask=row_mask)
    tl.store(bad_out + rows, bad_step, mask=row_mask)
    tl.store(acc_out + rows, accepted, mask=row_mask)


def _tile(n_chains: int, d: int, mlp_meta: dict) -> dict:
    if mlp_meta["NL"] > 0:  # tl.dot takes tiles of at least 16 x 16
        block_d = mlp_meta.pop("P0")
        widest = max(block_d, mlp_meta["P1"], mlp_meta["P2"], mlp_meta["P3"])
        if INTERPRETED:
            return {"BLOCK_N": max(16, min(_pow2_at_least(n_chains), _INTERPRETER_TILE // widest)), "BLOCK_D": block_d}
        return {"BLOCK_N": 32, "BLOCK_D": block_d, "num_warps": _GPU_WARPS}
    block_d = _pow2_at_least(d)
    if INTERPRETED:
        block_n = max(1, min(_pow2_at_least(n_chains), _INTERPRETER_TILE // block_d))
        return {"BLOCK_N": block_n, "BLOCK_D": block_d}
    return {"BLOCK_N": max(1, min(64, _GPU_TILE // block_d)), "BLOCK_D": block_d, "num_warps": _GPU_WARPS}


def _padded_width(width: int) -> int:
    return max(16, _pow2_at_least(width))


def _NO_MLP(dev: torch.device, dtype: torch.dtype) -> dict:
    """Placeholder MLP arguments for the analytic energies (never read)."""
    z = torch.zeros(1, device=dev, dtype=dtype)
    return {"tensors": [z] * 11, "scalars": [0.0] * 7,
            "meta": {"NL": 0, "P1": 1, "P2": 1, "P3": 1, "PT": 1, "ACT0": 0, "ACT1": 0, "ACT2": 0}}


def _mlp_arguments(params: list[torch.Tensor], d: int, dev: torch.device, dtype: torch.dtype) -> dict:
    """The kernel's MLP arguments from pysampler.fused.fused_target's "mlp" params (spec (L, 3),
    prior_weight (1,), then W^T, W, b per layer): each hidden layer's W^T, W and b zero-padded to
    power-of-two widths of at least 16 (padded units get zero weights in and out, so they add
    nothing), the last layer's weight row and bias, and the activation codes and parameters."""
    spec, prior, layers = params[0].cpu(), float(params[1].item()), params[2:]
    n_layers = len(layers) // 3
    if not 1 <= n_layers <= 4:
        raise ValueError(f"fused_chain (triton): an MLP with 1 to 4 Linear layers, got {n_layers}")
    widths = [d] + [int(layers[3 * i + 1].shape[0]) for i in range(n_layers)]
    padded = [_padded_width(w) for w in widths[:-1]]
    z = torch.zeros(1, device=dev, dtype=dtype)
    tensors, meta = [], {"NL": n_layers}
    for i in range(3):
        if i < n_layers - 1:
            pi, po = padded[i], padded[i + 1]
            wt, w, b = layers[3 * i], layers[3 * i + 1], layers[3 * i + 2]
            wt_pad = torch.zeros(pi, po, device=dev, dtype=dtype)
            wt_pad[: wt.shape[0], : wt.shape[1]] = wt
            w_pad = torch.zeros(po, pi, device=dev, dtype=dtype)
            w_pad[: w.shape[0], : w.shape[1]] = w
            b_pad = torch.zeros(po, device=dev, dtype=dtype)
            b_pad[: b.shape[0]] = b
            tensors += [wt_pad, w_pad, b_pad]
        else:
            tensors += [z, z, z]
    top_w, top_b = layers[3 * (n_layers - 1) + 1], layers[3 * (n_layers - 1) + 2]
    w_top = torch.zeros(padded[-1], device=dev, dtype=dtype)
    w_top[: top_w.shape[1]] = top_w[0]
    tensors += [w_top, top_b.reshape(1)]
    codes = [int(spec[i, 0]) for i in range(n_layers - 1)] + [0] * 3
    prm = [float(spec[i, 1]) if i < n_layers - 1 else 0.0 for i in range(3)]
    thr = [float(spec[i, 2]) if i < n_layers - 1 else 0.0 for i in range(3)]
    meta.update(P0=padded[0], P1=padded[1] if n_layers > 1 else 1, P2=padded[2] if n_layers > 2 else 1,
                P3=padded[3] if n_layers > 3 else 1, PT=padded[-1], ACT0=codes[0], ACT1=codes[1], ACT2=codes[2])
    return {"tensors": tensors, "scalars": [*prm, *thr, prior], "meta": meta}


def fused_chain(
    sampler: str, x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor, v: torch.Tensor | None,
    step_size: torch.Tensor, friction: torch.Tensor | None, frozen: torch.Tensor, rng: torch.Tensor,
    n_steps: int, record_from: int, thin: int, n_leapfrog: int, noise_scale: float, target: str,
    params: list[torch.Tensor],
):
    """Run ``n_steps`` of ``sampler`` on N chains in one launch; ``pysampler::fused_chain``'s contract.

    x, grad: (N, d) float32 / float64 (d ≤ 256); energy, step_size, friction: (N,); v: (N, d) for
    "kinetic"; frozen: (N,) bool; rng: int64 (2,) = (seed, offset). Returns (x, energy, grad, v,
    frozen, bad_step, accepted, trace) as the CPU kernel does: v empty unless kinetic, bad_step the
    1-based step a chain turned non-finite (ULA / kinetic), accepted the MH acceptances from
    ``record_from`` on, trace (n_keep, N, d) every ``thin``-th state from ``record_from`` on.
    """
    op = "fused_chain (triton)"
    if sampler not in ALGORITHMS:
        raise ValueError(f"{op}: sampler must be one of {sorted(ALGORITHMS)}, got {sampler!r}")
    if target not in TARGETS:
        raise ValueError(f"{op}: target must be one of {sorted(TARGETS)}, got {target!r}")
    if x.dim() != 2 or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{op}: x must be a float32 or float64 (N, d) tensor, got {tuple(x.shape)} {x.dtype}")
    n, d = x.shape
    if d > _MAX_DIM:
        raise ValueError(f"{op}: x has {d} dimensions; the Triton whole-chain kernel takes at most {_MAX_DIM}")
    if grad.shape != x.shape or energy.shape != (n,) or step_size.shape != (n,) or frozen.shape != (n,):
        raise ValueError(f"{op}: grad must be (N, d) and energy, step_size, frozen (N,) for x of shape {tuple(x.shape)}")
    kinetic = sampler == "kinetic"
    if kinetic and (v is None or v.shape != x.shape or friction is None or friction.shape != (n,)):
        raise ValueError(f"{op}: 'kinetic' needs v (N, d) and friction (N,)")
    if min(n_steps, record_from, thin) < 0 or n_leapfrog < 1:
        raise ValueError(f"{op}: n_steps, record_from and thin must be >= 0 and n_leapfrog >= 1")
    dev, dtype = x.device, x.dtype
    x, grad, energy, step_size = (t.to(dtype).contiguous() for t in (x, grad, energy, step_size))
    params = [p.to(device=dev, dtype=dtype).contiguous() for p in params]
    mlp = _mlp_arguments(params, d, dev, dtype) if target == "mlp" else _NO_MLP(dev, dtype)
    if target == "mlp":
        params = []
    while len(params) < 3:
        params.append(torch.zeros(1, device=dev, dtype=dtype))
    k = params[0].shape[0] if target == "mixture" else 1
    n_keep = (n_steps - record_from) // thin if thin > 0 and n_steps > record_from else 0
    x_out, g_out, u_out = torch.empty_like(x), torch.empty_like(grad), torch.empty_like(energy)
    v_in = v.to(dtype).contiguous() if kinetic else x
    v_out = torch.empty_like(x) if kinetic else torch.empty(0, device=dev, dtype=dtype)
    frozen_out = torch.empty(n, device=dev, dtype=torch.bool)
    bad = torch.empty(n, device=dev, dtype=torch.int64)
    accepted = torch.empty(n, device=dev, dtype=torch.int64)
    trace = torch.empty((n_keep, n, d), device=dev, dtype=dtype)
    gamma = friction.to(dtype).contiguous() if kinetic else step_size
    meta = _tile(n, d, mlp["meta"])
    noise_hi, noise_lo = split_scalar(float(noise_scale))
    if n > 0:
        launch(
            _fused_chain_kernel, ((n + meta["BLOCK_N"] - 1) // meta["BLOCK_N"],), dev,
            x, energy, grad, v_in, step_size, gamma, frozen.contiguous(), rng,
            x_out, u_out, g_out, v_out if kinetic else x_out, frozen_out, bad, accepted, trace if n_keep else x_out,
            params[0], params[1], params[2], *mlp["tensors"], *mlp["scalars"],
            n, d, k, int(n_steps), int(record_from), max(int(thin), 1), int(n_leapfrog), noise_hi, noise_lo,
            ALGO=ALGORITHMS[sampler], KIND=TARGETS[target], NOISE=float(noise_scale) != 0.0, TRACE=n_keep > 0,
            F64=dtype == torch.float64, **meta, **mlp["meta"],
        )
    return x_out, u_out, g_out, v_out, frozen_out, bad, accepted, trace
