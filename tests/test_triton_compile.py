"""Every Triton kernel compiles for a Hopper GPU (sm_90), without one.

The parity tests run the kernels in Triton's interpreter, which accepts some programs the compiler
rejects (type promotion, int1 arithmetic, scalar argument types, loop-carried types). Here the
compiler itself lowers each kernel to PTX ahead of time (``triton.compile`` for a CUDA target needs
no device), for each storage dtype and each constexpr branch, with the launch meta the launchers
use on a GPU. It runs in a subprocess because this test session has TRITON_INTERPRET=1 set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

_SCRIPT = textwrap.dedent(
    """
    import itertools

    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pysampler.kernels import common, diffusion as Df, hmc as H, langevin as L

    assert not common.INTERPRETED
    TARGET = GPUTarget("cuda", 90, 32)
    failures = []
    count = 0

    def compile_kernel(fn, types, meta, label):
        global count
        meta = dict(meta)
        warps = meta.pop("num_warps", 4)
        sig = {n: ("constexpr" if n in meta else types[n]) for n in fn.arg_names}
        consts = {(i,): meta[n] for i, n in enumerate(fn.arg_names) if n in meta}
        try:
            triton.compile(ASTSource(fn, sig, consts), target=TARGET, options={"num_warps": warps})
            count += 1
        except Exception as exc:
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:400]}")

    # storage dtype, compute dtype, F64
    DTYPES = [("fp32", "fp32", False), ("fp64", "fp64", True), ("bf16", "fp32", False)]
    for (st, cdt, f64), wide in itertools.product(DTYPES, (False, True)):
        if wide and st != "fp32":
            continue
        s, c, n = "*" + st, "*" + cdt, ("i64" if wide else "i32")
        _, meta = common.elementwise_grid(2**31 if wide else 4096, torch.float64 if f64 else torch.float32)
        ew = dict(meta, F64=f64)
        for noise, prior in ((True, True), (False, False)):
            compile_kernel(L._ula_kernel, dict(x_ptr=s, g_ptr=s, h_ptr=c, rng_ptr="*i64", out_ptr=s, numel=n, D="i32",
                           noise_hi="fp32", noise_lo="fp32", prior_hi="fp32", prior_lo="fp32"),
                           dict(ew, NOISE=noise, PRIOR=prior), f"ula {st} wide={wide} noise={noise}")
        compile_kernel(L._kinetic_oba_kernel, dict(x_ptr=s, v_ptr=s, g_ptr=s, h_ptr=c, gamma_ptr=c, rng_ptr="*i64",
                       x_out=s, v_out=s, numel=n, D="i32"), ew, f"kinetic_oba {st} wide={wide}")
        compile_kernel(L._kinetic_bo_kernel, dict(v_ptr=s, g_ptr=s, h_ptr=c, gamma_ptr=c, rng_ptr="*i64", v_out=s,
                       numel=n, D="i32"), ew, f"kinetic_bo {st} wide={wide}")
        compile_kernel(H._momentum_kernel, dict(rng_ptr="*i64", out_ptr=s, numel=n), meta, f"momentum {st} wide={wide}")
        for drift in (True, False):
            compile_kernel(H._kick_drift_kernel, dict(x_ptr=s, p_ptr=s, g_ptr=s, k_ptr=c, h_ptr=c, x_out=s, p_out=s,
                           numel=n, D="i32"), dict(ew, DRIFT=drift), f"kick_drift {st} wide={wide} drift={drift}")
        for posterior in (True, False):
            compile_kernel(Df._posterior_kernel, dict(x0_ptr=s, xt_ptr=s, t_ptr="*i64", c0_ptr=c, ct_ptr=c, std_ptr=c,
                           rng_ptr="*i64", out_ptr=s, numel=n, D="i32"), dict(ew, POSTERIOR=posterior),
                           f"posterior {st} wide={wide} posterior={posterior}")
        if wide:
            continue
        for d in (2, 3072):  # a short row (many chains per tile) and a long one (a loop over columns)
            _, tiles = common.row_tiles(4096, d)
            tiles = dict(tiles, F64=f64)
            compile_kernel(L._mala_accept_kernel, dict(x_ptr=s, e_ptr=c, g_ptr=s, y_ptr=s, ey_ptr=c, gy_ptr=s, h_ptr=c,
                           rng_ptr="*i64", x_out=s, e_out=c, g_out=s, prob_out=c, acc_out="*i1", N="i32", D="i32"),
                           tiles, f"mala_accept {st} D={d}")
            compile_kernel(H._hmc_accept_kernel, dict(x_ptr=s, e_ptr=c, g_ptr=s, p0_ptr=s, y_ptr=s, ey_ptr=c, gy_ptr=s,
                           p_ptr=s, k_ptr=c, rng_ptr="*i64", x_out=s, e_out=c, g_out=s, prob_out=c, acc_out="*i1",
                           N="i32", D="i32"), tiles, f"hmc_accept {st} D={d}")
    print("\\n".join(failures))
    print(f"compiled {count} failed {len(failures)}")
    """
)


def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, stated (silences 3.9's warning)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith("failed 0") and not last.startswith("compiled 0 "), out.stdout[-3000:]
