"""Whole-chain fused sampling: every step of a chain in one native call, for analytic targets.

For a target whose energy and gradient a kernel can compute itself (``Gaussian``,
``GaussianMixture``, ``MLPEnergy``), ``ps.sample`` hands the whole run to one kernel call: on the
CPU ``pysampler::fused_chain`` (csrc/cpu/fused.cpp), where each thread keeps a block of chains in
cache for all the steps (energy, gradient, update, Philox noise, MH test) instead of one pass per
step op over memory; on CUDA the Triton kernel of pysampler/kernels/fused.py, where each program
keeps its chains in registers (MLP layers as ``tl.dot``). The random stream is
the step-wise samplers' (step i uses the counters its step ops would), so a fused and a
step-wise run from one seed agree to float tolerance; ``res.backend`` says ``"cpp-fused"`` or
``"triton-fused"``.

Chosen by ``backend="auto"`` when the run allows it (a fusable target, float32 / float64, no
``callback``, no ``create_graph``; on the CPU the native library, on CUDA the Triton backend);
MALA / HMC step-size adaptation runs its burn-in step-wise, then the rest fused.
``backend="cpp-fused"`` / ``"triton-fused"`` ask for one and say why when it cannot be used.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from . import ops
from .backends import native
from .samplers.base import Sampler, State
from .samplers.hmc import HMC
from .samplers.kinetic import KineticLangevin
from .samplers.mala import MALA
from .samplers.ula import ULA
from .targets import Gaussian, GaussianMixture, MLPEnergy, Target

__all__ = ["FUSED_BACKEND", "TRITON_FUSED_BACKEND", "FUSED_BACKENDS", "fused_backend_for", "fused_target",
           "why_not_fused", "run_fused"]

#: the names ``ps.sample`` accepts and reports for the fused paths: the C++ kernel on the CPU,
#: the Triton kernel (pysampler/kernels/fused.py) on CUDA
FUSED_BACKEND = "cpp-fused"
TRITON_FUSED_BACKEND = "triton-fused"
FUSED_BACKENDS = (FUSED_BACKEND, TRITON_FUSED_BACKEND)
#: the step-wise backend of each fused path's family (runs an adapting burn-in before the fused rest)
STEPWISE_BACKEND = {FUSED_BACKEND: "cpp", TRITON_FUSED_BACKEND: "triton"}
_TRITON_MAX_DIM = 256

_SAMPLERS = {ULA: "ula", MALA: "mala", KineticLangevin: "kinetic", HMC: "hmc"}
#: fused.cpp's Activation codes for MLPEnergy's activation names
_ACTIVATION_CODES = {"silu": 0, "tanh": 1, "softplus": 2, "relu": 3, "leaky_relu": 4, "gelu": 5, "gelu_tanh": 6}


def fused_target(target: Target, dtype: torch.dtype) -> tuple[str, list[torch.Tensor]] | None:
    """(kind, params) describing ``target`` to the fused kernel (fused.cpp's Energy), or None.

    gaussian_diag: (mean, 1/scale²); gaussian_full: (mean, precision); mixture: (means, 1/σ²,
    log w − Σ log σ − d/2 log 2π), the terms of ``GaussianMixture``'s own energy_and_grad; mlp:
    (spec (L, 3) = activation code / param / threshold per layer, prior_weight (1,), then Wᵀ, W, b
    per layer) for ``MLPEnergy``.
    """
    def prep(*ts: torch.Tensor) -> list[torch.Tensor]:
        return [t.detach().to(dtype).contiguous() for t in ts]

    if isinstance(target, Gaussian):
        if target.scale_tril is not None:
            return "gaussian_full", prep(target.mean, target.precision)
        return "gaussian_diag", prep(target.mean, target.scale.to(dtype).square().reciprocal())
    if isinstance(target, MLPEnergy):
        layers = target.layers(dtype)
        spec = torch.tensor(
            [[_ACTIVATION_CODES.get(la.activation, 0), la.param, la.threshold] for la in layers], dtype=dtype
        ).to(layers[0].weight.device)
        params = [spec, torch.tensor([target.prior_weight], dtype=dtype, device=spec.device)]
        for la in layers:
            params += [la.weight.T.contiguous(), la.weight, la.bias]
        return "mlp", params
    if isinstance(target, GaussianMixture):
        sd = target.stds.to(dtype)
        d = target.means.shape[1]
        log_coef = -sd.log().sum(-1) - 0.5 * d * math.log(2 * math.pi) + target.weights.to(dtype).log()
        return "mixture", prep(target.means, sd.square().reciprocal(), log_coef)
    return None


def fused_backend_for(device: torch.device | str) -> str:
    """The fused path ``backend="auto"`` would use on ``device``: "triton-fused" on CUDA, else "cpp-fused"."""
    return TRITON_FUSED_BACKEND if torch.device(device).type == "cuda" else FUSED_BACKEND


def why_not_fused(
    target: Target, sampler: Sampler, x0: torch.Tensor, *, create_graph: bool, callback, backend: str | None = None
) -> str | None:
    """None when the fused path ``backend`` (default: the one for x0's device) can run this; else
    the reason, for errors and docs.

    "triton-fused" also runs on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1), which
    is how the tests reach it without a GPU; ``backend="auto"`` never picks it there.
    """
    backend = backend or fused_backend_for(x0.device)
    if type(sampler) not in _SAMPLERS:
        return f"{type(sampler).__name__} has no fused kernel (ULA, MALA, KineticLangevin and HMC do)"
    described = fused_target(target, torch.float64)
    if described is None:
        return f"{type(target).__name__} is not a fusable target (Gaussian, GaussianMixture and MLPEnergy are)"
    if x0.dtype not in (torch.float32, torch.float64):
        return f"the fused kernels take float32 or float64 states; x0 is {x0.dtype}"
    if backend == FUSED_BACKEND:
        if x0.device.type != "cpu":
            return f"'{FUSED_BACKEND}' runs on the CPU; x0 is on {x0.device} (use '{TRITON_FUSED_BACKEND}' there)"
        if not native.available():
            return f"the native library is not built ({native.load_error()})"
    else:
        from .backends import available_backends

        if "triton" not in available_backends(x0.device):
            return f"the Triton kernels cannot run on {x0.device} ({_triton_load_error()})"
        if x0.dim() != 2 or x0.shape[1] > _TRITON_MAX_DIM:
            return f"the Triton whole-chain kernel takes (N, d) states with d <= {_TRITON_MAX_DIM}; x0 is {tuple(x0.shape)}"
    if create_graph:
        return "create_graph=True needs the step-wise autograd path"
    if callback is not None:
        return "a per-step callback needs the step-wise path"
    if getattr(sampler, "schedule", None) is not None:
        return "an annealing schedule needs the step-wise path"
    return None


def _triton_load_error() -> str:
    from .backends import triton as triton_backend

    return triton_backend.load_error() or "Triton runs on CUDA devices, or on the CPU only under TRITON_INTERPRET=1"


def run_fused(
    sampler: Sampler, state: State, n_steps: int, record_from: int = 0, thin: int = 0, backend: str = FUSED_BACKEND
):
    """Run ``n_steps`` steps of ``sampler`` from ``state`` in one fused call of ``backend``'s kernel.

    Returns (state after the run, accepted (N,) int64 count of accepted steps from
    ``record_from`` on (all of them for ULA and kinetic Langevin), trace (n_keep, N, *event):
    every ``thin``-th state from ``record_from`` on, empty when ``thin == 0``). ULA and kinetic
    Langevin chains that turn non-finite raise, or freeze with ``on_nonfinite="freeze"``,
    exactly as in the step-wise samplers.
    """
    assert state.prior_weight == 0.0, "the fused kernels cache the full gradient"
    kind, params = fused_target(state.target, state.x.dtype)
    name = _SAMPLERS[type(sampler)]
    if backend == TRITON_FUSED_BACKEND:
        from .kernels.fused import fused_chain
    else:
        fused_chain = torch.ops.pysampler.fused_chain
    x, energy, grad, v, frozen, bad_step, accepted, trace = fused_chain(
        name, state.x, state.energy, state.grad, state.v, state.step_size, state.friction, state.frozen,
        state.rng, n_steps, record_from, thin, getattr(sampler, "n_leapfrog", 1),
        float(getattr(sampler, "noise_scale", 1.0)), kind, params,
    )
    if name in ("ula", "kinetic"):
        bad = bad_step > 0
        if sampler.on_nonfinite == "raise" and bool(bad.any()):
            first = int(bad_step[bad].min())
            idx = (bad_step == first).nonzero()[:, 0].tolist()
            shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
            raise FloatingPointError(
                f"{sampler.name}: {len(idx)} chain(s) became non-finite at step {int(state.step) + first} "
                f"(chains {shown}); lower step_size, or pass on_nonfinite='freeze' to stop those chains instead"
            )
        accepted = torch.full_like(accepted, n_steps - record_from)
    per_step = {
        "ula": ops.counters("ula_step", x),
        "mala": ops.counters("ula_step", x) + ops.counters("mala_accept", x),
        "kinetic": ops.counters("kinetic_oba", x) + ops.counters("kinetic_bo", x),
        "hmc": ops.counters("momentum", x) + ops.counters("hmc_accept", x),
    }[name]
    rng = state.rng.clone()
    rng[1] += per_step * n_steps
    new = replace(
        state, x=x, energy=energy, grad=grad, v=v if name == "kinetic" else state.v, frozen=frozen,
        rng=rng, step=state.step + n_steps,
    )
    return new, accepted, trace
