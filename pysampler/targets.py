"""Targets: what to sample. Each is an unnormalised density exp(-U(x)) over x: (N, *event).

A target gives the potential U (N,) and its gradient with respect to the inputs only
(``torch.autograd.grad``; model parameters never get ``.grad``). ``create_graph=True``
keeps the graph so a trainer can backpropagate through a short chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .structure import StateLayout, is_structure, leaves, restructure

__all__ = [
    "Target", "EnergyTarget", "LatentTarget", "ReparamTarget", "FlatTarget", "GaussianMixture", "Gaussian", "MLPEnergy",
    "MLPLayer", "gmm25",
]

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


def _module_tensor(obj: object) -> torch.Tensor | None:
    """The first parameter or buffer of an nn.Module (its device and dtype), else None."""
    if isinstance(obj, nn.Module):
        for t in obj.parameters():
            return t
        for t in obj.buffers():
            return t
    return None


def _require_callable(name: str, value: object, expected: str) -> None:
    """TypeError naming the argument when ``value`` is not callable."""
    if not callable(value):
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__}")


_ENERGY_ON_DATA = "a callable or nn.Module mapping x (N, *data) -> (N,)"


def _n_chains(x) -> int:
    """N of a state: a tensor (N, *event) or a tuple / list / dict of (N, *shape) tensors."""
    return (leaves(x)[0] if is_structure(x) else x).shape[0]


def _per_chain(value: object, n: int, what: str, where: Callable[[], str] | str = "") -> torch.Tensor:
    """``value`` if it is an (n,) tensor, else a ValueError naming ``what`` returned it. ``where``
    (text, or a function giving it: built only for the error, as this runs every evaluation)."""
    if not isinstance(value, torch.Tensor) or value.shape != (n,):
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        hint = " (squeeze the last dimension)" if isinstance(value, torch.Tensor) and value.shape == (n, 1) else ""
        place = where() if callable(where) else where
        raise ValueError(f"{what} must return a tensor of shape (N,) = ({n},){place}; got {got}{hint}")
    return value


def _value_and_grad(fn: Callable, x, create_graph: bool):
    """(fn(x) (N,), ∇ₓ fn(x)) by autograd, with respect to x only; x is a tensor or a tuple /
    list / dict of tensors (the gradient then has x's structure; a group fn ignores gets zeros).

    Without ``create_graph`` both outputs are detached. With it, x keeps whatever graph it has and
    the outputs carry the graph (to x and to the model's parameters).
    """
    structured = is_structure(x)
    groups = leaves(x) if structured else [x]
    with torch.enable_grad():
        live = [g if (create_graph and g.requires_grad) else g.detach().requires_grad_(True) for g in groups]
        value = fn(restructure(x, live) if structured else live[0])
        grads = torch.autograd.grad(value.sum(), live, create_graph=create_graph, allow_unused=structured)
    grads = [torch.zeros_like(v) if g is None else g for v, g in zip(live, grads, strict=True)]
    if not create_graph:
        value, grads = value.detach(), [g.detach() for g in grads]
    return value, (restructure(x, grads) if structured else grads[0])


class Target:
    """Base class: subclasses implement :meth:`potential` (N, *event) -> (N,).

    ``energy_and_grad`` differentiates it with autograd; subclasses with a closed-form
    gradient override it.
    """

    #: analytic targets cast their parameters to x's dtype; nn.Module energies do not
    follows_input_dtype: bool = False
    #: w of a closed-form standard-normal prior term w·½|x|² in U whose gradient w·x a step kernel
    #: can add itself (ULA's ``ula_step(prior_weight=w)``), saving a pass per step: then the
    #: sampler caches ∇U − w·x (:meth:`energy_and_grad_without_prior`). 0: no such term.
    kernel_prior: float = 0.0

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tensors(self) -> list[torch.Tensor]:
        """One tensor per model or parameter set the target holds (to check device and dtype of x0)."""
        return []

    def validate(self, x: torch.Tensor) -> None:
        """Raise a clear error if this target cannot evaluate ``x``: device or dtype mismatch."""
        for t in self.tensors():
            dev = t.device
            if dev.type != x.device.type or (dev.index is not None and x.device.index is not None and dev != x.device):
                raise ValueError(
                    f"x0 is on {x.device} but the target's parameters are on {dev}; "
                    f"move x0 (x0.to('{dev}')) or the model to the same device"
                )
            if not self.follows_input_dtype and t.is_floating_point() and t.dtype != x.dtype:
                raise ValueError(
                    f"x0 is {x.dtype} but the target's parameters are {t.dtype}; "
                    f"use x0.to({t.dtype}) or convert the model (model.to({x.dtype}))"
                )

    def _checked(self, u: torch.Tensor, x) -> torch.Tensor:
        def where() -> str:
            shape = [tuple(g.shape) for g in leaves(x)] if is_structure(x) else tuple(x.shape)
            return f" for x of shape {shape}"

        return _per_chain(u, _n_chains(x), "energy", where)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """U(x): (N,), without gradient tracking."""
        with torch.no_grad():
            return self._checked(self.potential(x), x)

    def energy_and_grad(self, x: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(U(x) (N,), ∇ₓU(x) (N, *event)), gradient w.r.t. ``x`` only (x may also be a tuple /
        list / dict of tensors; the gradient then has its structure).

        Without ``create_graph`` both outputs are detached. With it, ``x`` keeps whatever graph
        it has and the outputs carry the graph (to x and to the model's parameters).
        """
        return _value_and_grad(lambda xg: self._checked(self.potential(xg), x), x, create_graph)

    def energy_and_grad_without_prior(self, x, create_graph: bool = False):
        """(U(x) (N,), ∇U(x) − kernel_prior·x): the gradient without the prior term a step kernel
        adds. Targets with ``kernel_prior != 0`` implement it without ever adding the term."""
        if self.kernel_prior != 0.0:
            raise NotImplementedError(
                f"{type(self).__name__} sets kernel_prior, so it must implement energy_and_grad_without_prior"
            )
        return self.energy_and_grad(x, create_graph=create_graph)


class EnergyTarget(Target):
    """Density ∝ exp(-energy(x)) for any callable or nn.Module mapping (N, *event) -> (N,)."""

    def __init__(self, energy: EnergyFn):
        _require_callable("energy", energy, "a callable or nn.Module mapping (N, *event) -> (N,)")
        self.energy_fn = energy

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy_fn(x)

    def tensors(self) -> list[torch.Tensor]:
        t = _module_tensor(self.energy_fn)
        return [t] if t is not None else []


def _half_sq_norm(x: torch.Tensor | tuple | list | dict) -> torch.Tensor:
    """½|x|² per chain over a tensor (N, *event) or every group of a structured state."""
    groups = leaves(x) if is_structure(x) else [x]
    return 0.5 * sum(g.flatten(1).square().sum(1) for g in groups)


class _TiltedNormal(Target):
    """U(x) = ½|x|² + tilt(x): a standard-normal prior tilted by a model term (subclasses give
    ``_tilt``: (N,)). x is a tensor or a tuple / list / dict of tensors.

    The prior term and its gradient x are closed-form; autograd differentiates only the tilt, and
    ULA adds the prior's gradient x inside its update kernel (``kernel_prior``).
    """

    kernel_prior = 1.0

    def _tilt(self, x) -> torch.Tensor:
        raise NotImplementedError

    def potential(self, x) -> torch.Tensor:
        return _half_sq_norm(x) + self._tilt(x)

    def energy_and_grad_without_prior(self, x, create_graph: bool = False):
        """(U(x) (N,), ∇tilt(x)) in x's structure: the gradient without the prior's x."""
        e, g = _value_and_grad(self._tilt, x, create_graph)
        groups = [v if create_graph else v.detach() for v in (leaves(x) if is_structure(x) else [x])]
        return _half_sq_norm(groups) + e, g

    def energy_and_grad(self, x, create_graph: bool = False):
        """(U(x) (N,), ∇U(x)) in x's structure: x + ∇tilt(x)."""
        u, g = self.energy_and_grad_without_prior(x, create_graph)
        if not is_structure(x):
            return u, g + (x if create_graph else x.detach())
        groups = [v if create_graph else v.detach() for v in leaves(x)]
        return u, restructure(x, [v + d for v, d in zip(groups, leaves(g), strict=True)])


class LatentTarget(_TiltedNormal):
    """GEBM latent posterior π(z) ∝ N(z; 0, I)·exp(-temperature·E(G(z))).

    U(z) = ½|z|² + temperature·E(G(z)) (Arbel, Zhou & Gretton, ICLR 2021; ../shared/seeds/001).
    The prior term and its gradient z are computed in closed form; only E∘G goes through
    autograd, and ULA adds the prior's gradient z inside its update kernel (``kernel_prior``).
    ``decode(z)`` returns G(z), the sample in data space.
    """

    def __init__(self, generator: Callable[[torch.Tensor], torch.Tensor], energy: EnergyFn, temperature: float = 1.0):
        _require_callable("generator", generator, "a callable or nn.Module mapping z (N, *latent) -> x (N, *data)")
        _require_callable("energy", energy, _ENERGY_ON_DATA)
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0; got {temperature}")
        self.generator = generator
        self.energy_fn = energy
        self.temperature = temperature

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (_module_tensor(self.generator), _module_tensor(self.energy_fn)) if t is not None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): latent samples (N, *latent) mapped to data space (N, *data), no grad."""
        with torch.no_grad():
            return self.generator(z)

    def _tilt(self, z: torch.Tensor) -> torch.Tensor:
        """temperature·E(G(z)): (N,)."""
        return self._checked(self.energy_fn(self.generator(z)), z) * self.temperature


class ReparamTarget(_TiltedNormal):
    """VAEBM's target in the noise space of a reparameterised generator (dissertation ch. 4.3, eq. 4.19).

    U(ε) = ½|ε|² + E(T(ε)) [− log_likelihood(ε)], so exp(−U) is the standard-normal base density
    tilted by the energy of the generated sample x = T(ε) (Xiao et al., VAEBM, ICLR 2021; the
    derivation is eqs. 4.20-4.29 of ../shared/seeds/004). Every group of ε has the same scale,
    so one step size serves them all.

    Args:
        transform: T, the reparameterised generator: ``transform(eps)`` returns data-space samples
            (N, *data). ``eps`` is whatever the chains' state is: a tensor (N, *event), or a tuple,
            list or dict of (N, *shape_i) tensors (for a hierarchical VAE: the ε_z groups and ε_x),
            in the shapes given to ``ps.sample``.
        energy: E, a callable or nn.Module mapping (N, *data) -> (N,).
        log_likelihood: optional callable eps -> (N,) subtracted from U, for a state part that is
            not standard normal a priori (for example a tempered or observed likelihood term).

    The prior term and its gradient ε are closed-form; autograd differentiates E∘T (and the
    log-likelihood), and ULA adds the prior's gradient ε inside its update kernel
    (``kernel_prior``). ``decode(eps)`` returns T(ε).
    """

    def __init__(
        self,
        transform: Callable[[object], torch.Tensor],
        energy: EnergyFn,
        log_likelihood: Callable[[object], torch.Tensor] | None = None,
    ):
        _require_callable(
            "transform", transform,
            "a callable or nn.Module mapping eps (a tensor, or a tuple / dict of tensors) to data-space samples (N, *data)",
        )
        _require_callable("energy", energy, _ENERGY_ON_DATA)
        if log_likelihood is not None:
            _require_callable("log_likelihood", log_likelihood, "None or a callable eps -> (N,)")
        self.transform = transform
        self.energy_fn = energy
        self.log_likelihood = log_likelihood

    def tensors(self) -> list[torch.Tensor]:
        found = (_module_tensor(m) for m in (self.transform, self.energy_fn, self.log_likelihood))
        return [t for t in found if t is not None]

    def decode(self, eps) -> torch.Tensor:
        """T(ε): noise-space samples mapped to data space (N, *data), no grad."""
        with torch.no_grad():
            return self.transform(eps)

    def _tilt(self, eps) -> torch.Tensor:
        """E(T(ε)) − log_likelihood(ε): (N,)."""
        n = _n_chains(eps)
        e = _per_chain(self.energy_fn(self.transform(eps)), n, "energy(transform(eps))")
        if self.log_likelihood is not None:
            e = e - _per_chain(self.log_likelihood(eps), n, "log_likelihood(eps)")
        return e



class FlatTarget(Target):
    """A target over structured states seen as flat (N, D) states (what the samplers step).

    ``ps.sample`` wraps the target this way when ``x0`` is a tuple, list or dict; the wrapped
    target receives the groups in their own shapes (views of the flat state, so autograd flows
    through them) and its gradient is flattened back.
    """

    def __init__(self, target: Target, layout: StateLayout):
        self.target = target
        self.layout = layout
        self.follows_input_dtype = target.follows_input_dtype
        self.kernel_prior = target.kernel_prior  # ½|x|² over all groups is ½|flat x|²

    def tensors(self) -> list[torch.Tensor]:
        return self.target.tensors()

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.potential(self.layout.unflatten(x))

    def _on_groups(self, method: Callable, x: torch.Tensor, create_graph: bool):
        # the wrapped target's own method on the groups (its closed forms apply), then flat
        src = x if (create_graph and x.requires_grad) else x.detach()
        u, g = method(self.layout.unflatten(src), create_graph=create_graph)
        return self._checked(u, x), self.layout.flatten(g)

    def energy_and_grad(self, x: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self._on_groups(self.target.energy_and_grad, x, create_graph)

    def energy_and_grad_without_prior(self, x: torch.Tensor, create_graph: bool = False):
        return self._on_groups(self.target.energy_and_grad_without_prior, x, create_graph)


class Gaussian(Target):
    """N(mean, Σ) over x: (N, d), with Σ = diag(scale²) or Σ = L Lᵀ from a Cholesky factor.

    Args: mean (d,); scale (d,) or scalar for the diagonal form; ``scale_tril`` (d, d)
    lower-triangular with positive diagonal for the correlated form (give one of the two).
    """

    follows_input_dtype = True

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor | float | None = None, *, scale_tril: torch.Tensor | None = None):
        mean = torch.as_tensor(mean)
        if mean.ndim != 1 or not mean.is_floating_point():
            raise ValueError(f"mean must be a floating (d,) tensor; got shape {tuple(mean.shape)} dtype {mean.dtype}")
        d = mean.shape[0]
        if (scale is None) == (scale_tril is None):
            raise ValueError("give exactly one of scale (diagonal) or scale_tril (Cholesky factor)")
        self.mean = mean
        self.scale_tril = None
        if scale_tril is not None:
            scale_tril = torch.as_tensor(scale_tril, dtype=mean.dtype, device=mean.device)
            if scale_tril.shape != (d, d) or not bool((torch.diagonal(scale_tril) > 0).all()):
                raise ValueError(f"scale_tril must be a ({d}, {d}) lower-triangular matrix with positive diagonal")
            self.scale_tril = torch.tril(scale_tril)
            self.precision = torch.cholesky_inverse(self.scale_tril)
            self.scale = None
        else:
            scale = torch.as_tensor(scale, dtype=mean.dtype, device=mean.device).expand(d).clone()
            if not bool((scale > 0).all()):
                raise ValueError("scale must be > 0 in every coordinate")
            self.scale = scale

    @property
    def covariance(self) -> torch.Tensor:
        if self.scale_tril is not None:
            return self.scale_tril @ self.scale_tril.T
        return torch.diag(self.scale.square())

    def tensors(self) -> list[torch.Tensor]:
        return [self.mean]

    def _check_x(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x must have shape (N, {self.mean.shape[0]}); got {tuple(x.shape)}")

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        r = x - self.mean.to(x.dtype)
        if self.scale_tril is not None:
            return 0.5 * ((r @ self.precision.to(x.dtype)) * r).sum(1)
        return 0.5 * (r / self.scale.to(x.dtype)).square().sum(1)

    def energy_and_grad(self, x: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_x(x)
        r = x - self.mean.to(x.dtype)
        if self.scale_tril is not None:
            g = r @ self.precision.to(x.dtype)
        else:
            g = r / self.scale.to(x.dtype).square()
        return 0.5 * (g * r).sum(1), g


#: log-weight (relative to the largest) below which a mixture component's responsibility is 0
_NEGLIGIBLE_LOG_WEIGHT = -64.0


class GaussianMixture(Target):
    """Mixture of K Gaussians with isotropic (K,) or diagonal (K, d) standard deviations.

    U(x) = -log Σ_k w_k N(x; μ_k, diag(σ_k²)), computed with logsumexp; means (K, d).
    """

    follows_input_dtype = True

    def __init__(self, means: torch.Tensor, stds: torch.Tensor | float, weights: torch.Tensor | None = None):
        means = torch.as_tensor(means)
        if means.ndim != 2 or not means.is_floating_point():
            raise ValueError(f"means must be a floating (K, d) tensor; got shape {tuple(means.shape)} dtype {means.dtype}")
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=means.dtype, device=means.device)
        if stds.ndim <= 1:
            stds = stds.reshape(-1, 1).expand(k, d) if stds.ndim == 1 else stds.expand(k, d)
        if stds.shape != (k, d) or not bool((stds > 0).all()):
            raise ValueError(f"stds must be positive, of shape (), ({k},) or ({k}, {d}); got {tuple(stds.shape)}")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if weights.shape != (k,) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be positive of shape ({k},); got {tuple(weights.shape)}")
        self.means = means
        self.stds = stds.contiguous()
        self.weights = weights / weights.sum()

    def tensors(self) -> list[torch.Tensor]:
        return [self.means]

    def _component_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-component log-densities plus log-weights (N, K), residuals x − μ_k (N, K, d), σ (K, d)."""
        if x.ndim != 2 or x.shape[1] != self.means.shape[1]:
            raise ValueError(f"x must have shape (N, {self.means.shape[1]}); got {tuple(x.shape)}")
        mu, sd, w = (t.to(x.dtype) for t in (self.means, self.stds, self.weights))
        diff = x[:, None, :] - mu  # (N, K, d)
        log_norm = -sd.log().sum(-1) - 0.5 * mu.shape[1] * math.log(2 * math.pi) + w.log()
        return -0.5 * (diff / sd).square().sum(-1) + log_norm, diff, sd

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        log_comp, _, _ = self._component_terms(x)
        return -torch.logsumexp(log_comp, dim=1)

    def energy_and_grad(self, x: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # ∇U = Σ_k r_k (x − μ_k)/σ_k², r = softmax of the component log-densities (responsibilities).
        # One exp pass serves both U = −logsumexp and the responsibilities.
        log_comp, diff, sd = self._component_terms(x)
        top = log_comp.amax(1, keepdim=True)
        # Components more than e^64 below the top one weigh 0 (less than 1e-27 of it: below any
        # float's precision): computing their weights would make denormals, which x86 CPUs
        # handle ~100x slower. The fused kernels (csrc/cpu/fused.cpp) do the same.
        rel = log_comp - top
        weights = torch.exp(rel.clamp_min(_NEGLIGIBLE_LOG_WEIGHT)).masked_fill_(rel < _NEGLIGIBLE_LOG_WEIGHT, 0.0)
        total = weights.sum(1, keepdim=True)
        resp = weights / total
        grad = (resp[:, :, None] * diff / sd.square()).sum(1)
        return -(top + total.log()).squeeze(1), grad


# ---------------------------------------------------------------------------------- MLP energy

#: most Linear layers and widest hidden layer a fused kernel keeps on chip (issue 5's contract)
MLP_MAX_LAYERS, MLP_MAX_WIDTH = 4, 256

_ACTIVATIONS = (nn.SiLU, nn.Tanh, nn.Softplus, nn.ReLU, nn.LeakyReLU, nn.GELU)


@dataclass(frozen=True)
class MLPLayer:
    """One Linear layer of an :class:`MLPEnergy` and the activation that follows it.

    weight (out, in), bias (out,) (zeros when the Linear has none); ``activation`` is one of
    "silu", "tanh", "softplus", "relu", "leaky_relu", "gelu", "gelu_tanh", or None after the last
    layer; ``param`` is LeakyReLU's negative slope or Softplus's beta (``threshold`` its threshold).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    activation: str | None
    param: float = 0.0
    threshold: float = 0.0


def _activation_spec(module: nn.Module) -> tuple[str, float, float]:
    if isinstance(module, nn.SiLU):
        return "silu", 0.0, 0.0
    if isinstance(module, nn.Tanh):
        return "tanh", 0.0, 0.0
    if isinstance(module, nn.Softplus):
        return "softplus", float(module.beta), float(module.threshold)
    if isinstance(module, nn.ReLU):
        return "relu", 0.0, 0.0
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu", float(module.negative_slope), 0.0
    if isinstance(module, nn.GELU):
        return ("gelu_tanh" if module.approximate == "tanh" else "gelu"), 0.0, 0.0
    raise AssertionError(module)


def activation_and_slope(name: str, z: torch.Tensor, param: float = 0.0, threshold: float = 0.0):
    """(a(z), a'(z)) of a fusable activation, as the fused kernels compute them (torch's definitions)."""
    if name == "silu":
        sig = torch.sigmoid(z)
        return z * sig, sig * (1 + z * (1 - sig))
    if name == "tanh":
        t = torch.tanh(z)
        return t, 1 - t * t
    if name == "softplus":  # log(1 + e^{βz})/β, linear above the threshold (as nn.Softplus)
        bz = param * z
        linear = bz > threshold
        a = torch.where(linear, z, torch.log1p(torch.exp(torch.where(linear, 0.0, bz))) / param)
        return a, torch.where(linear, 1.0, torch.sigmoid(bz))
    if name == "relu":
        return torch.relu(z), (z > 0).to(z.dtype)
    if name == "leaky_relu":
        pos = z > 0
        return torch.where(pos, z, param * z), torch.where(pos, 1.0, torch.full_like(z, param))
    if name == "gelu":  # z Φ(z)
        cdf = 0.5 * (1 + torch.erf(z * math.sqrt(0.5)))
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return z * cdf, cdf + z * pdf
    if name == "gelu_tanh":  # ½z(1 + tanh(√(2/π)(z + 0.044715 z³)))
        c = math.sqrt(2 / math.pi)
        t = torch.tanh(c * (z + 0.044715 * z * z * z))
        return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)
    raise ValueError(f"unknown activation {name!r}")


class MLPEnergy(Target):
    """U(x) = f(x) + ½·prior_weight·|x|² for a small MLP f: an ``nn.Sequential`` of Linear layers
    with one activation between consecutive ones (SiLU, Tanh, Softplus, ReLU, LeakyReLU, GELU),
    a scalar output, at most 4 Linear layers and hidden width at most 256.

    Such an energy can be fused: the whole-chain kernels evaluate f and its input gradient by
    hand (forward pass keeping the pre-activations z_l, then δ ← (δ·a'(z_l)) W_l backwards),
    with the weights loaded once; :meth:`energy_and_grad_by_hand` is that computation in PyTorch.
    Any other module raises a ValueError that says why; ``EnergyTarget`` samples it unfused.
    The module's parameters are read when the energy is evaluated (training updates are seen).
    """

    def __init__(self, module: nn.Module, prior_weight: float = 0.0):
        self.module = module
        self.structure = self._check_structure(module)  # [(Linear, activation spec or None)]
        prior_weight = float(prior_weight)
        if not math.isfinite(prior_weight) or prior_weight < 0:
            raise ValueError(f"prior_weight must be a finite number >= 0; got {prior_weight}")
        self.prior_weight = prior_weight
        self.dim = self.structure[0][0].in_features

    @staticmethod
    def _check_structure(module: nn.Module) -> list[tuple[nn.Linear, tuple[str, float, float] | None]]:
        why = None
        if not isinstance(module, nn.Sequential):
            why = f"it is a {type(module).__name__}, not an nn.Sequential of Linear layers and activations"
        else:
            children = list(module)
            linears = children[0::2]
            acts = children[1::2]
            if not children or len(children) % 2 == 0:
                why = "it must alternate Linear, activation, Linear, ..., and end with a Linear layer"
            elif not all(isinstance(m, nn.Linear) for m in linears):
                bad = next(m for m in linears if not isinstance(m, nn.Linear))
                why = f"expected a Linear layer where it has {type(bad).__name__} (layers must alternate Linear, activation)"
            elif not all(isinstance(m, _ACTIVATIONS) for m in acts):
                bad = next(m for m in acts if not isinstance(m, _ACTIVATIONS))
                names = ", ".join(a.__name__ for a in _ACTIVATIONS)
                why = f"{type(bad).__name__} is not a fusable activation ({names})"
            elif len(linears) > MLP_MAX_LAYERS:
                why = f"it has {len(linears)} Linear layers; at most {MLP_MAX_LAYERS} are fused"
            elif linears[-1].out_features != 1:
                why = f"its last Linear layer has {linears[-1].out_features} outputs; the energy must be a scalar (1 output)"
            elif max((m.out_features for m in linears[:-1]), default=0) > MLP_MAX_WIDTH:
                why = f"a hidden layer is wider than {MLP_MAX_WIDTH}"
            elif linears[0].in_features > MLP_MAX_WIDTH:
                why = f"its input has {linears[0].in_features} features; at most {MLP_MAX_WIDTH} are fused"
        if why is not None:
            raise ValueError(f"MLPEnergy cannot fuse this module: {why}. EnergyTarget(module) samples any energy, unfused.")
        specs = [_activation_spec(act) for act in acts] + [None]
        return list(zip(linears, specs, strict=True))

    def layers(self, dtype: torch.dtype | None = None) -> list[MLPLayer]:
        """The layers as plain tensors (detached, contiguous, in ``dtype`` if given): what a kernel loads."""
        out = []
        for lin, act in self.structure:
            w = lin.weight.detach()
            b = lin.bias.detach() if lin.bias is not None else torch.zeros(lin.out_features, dtype=w.dtype, device=w.device)
            if dtype is not None:
                w, b = w.to(dtype), b.to(dtype)
            name, param, threshold = act if act is not None else (None, 0.0, 0.0)
            out.append(MLPLayer(w.contiguous(), b.contiguous(), name, param, threshold))
        return out

    def tensors(self) -> list[torch.Tensor]:
        return [self.structure[0][0].weight]

    def _check_x(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}) for this MLP; got {tuple(x.shape)}")

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        self._check_x(x)
        u = self.module(x).squeeze(-1)
        if self.prior_weight:
            u = u + 0.5 * self.prior_weight * x.square().sum(1)
        return u

    def energy_and_grad_by_hand(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U and ∇ₓU computed as the fused kernels do: forward keeping a'(z_l), then
        δ ← (δ·a'(z_l)) W_l from the top. The tests hold it (and the kernels) to autograd;
        ``energy_and_grad`` itself uses autograd, which runs torch's fused activation kernels.
        """
        self._check_x(x)
        with torch.no_grad():
            layers = self.layers()
            h, slopes = x, []
            for layer in layers:
                z = torch.addmm(layer.bias, h, layer.weight.T)
                if layer.activation is None:
                    h = z
                else:
                    h, slope = activation_and_slope(layer.activation, z, layer.param, layer.threshold)
                    slopes.append(slope)
            u = h.squeeze(-1)
            delta = layers[-1].weight.expand(x.shape[0], -1)  # dU/dh of the last hidden layer (N, width)
            for layer, slope in zip(reversed(layers[:-1]), reversed(slopes), strict=True):
                delta = (delta * slope) @ layer.weight
            if self.prior_weight:
                u = u + 0.5 * self.prior_weight * x.square().sum(1)
                delta = delta + self.prior_weight * x
            return u, delta.contiguous()


def gmm25(std: float = 0.5, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> GaussianMixture:
    """The 25-Gaussian benchmark target: equal weights, means on {-4,-2,0,2,4}², isotropic σ."""
    grid = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=dtype, device=device)
    means = torch.cartesian_prod(grid, grid)
    return GaussianMixture(means, torch.tensor(std, dtype=dtype, device=device))
