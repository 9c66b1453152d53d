"""Adversarial losses and penalties: pure functions of logits and tensors.

Each adversarial loss is a pair (discriminator loss, generator loss) selected by
name through `ADVERSARIAL`. All return a scalar mean over the batch, so summing
the losses of equally sized micro-batches and ranks averages the global batch.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from distgan.errors import ConfigError

# ----------------------------------------------------------------- discriminator side


def d_cross_entropy(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> dict[str, Tensor]:
    """-log D(x) - log(1 - D(G(z))); `real_target` < 1 is one-sided label smoothing."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    fake = F.softplus(fake_logits).mean()  # -log(1 - sigmoid(l)) = softplus(l)
    return {"real": real, "fake": fake}


def d_least_squares(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """LSGAN (Mao et al. 2017), targets a=0 (fake), b=1 (real)."""
    return {"real": 0.5 * (real_logits - 1).pow(2).mean(), "fake": 0.5 * fake_logits.pow(2).mean()}


def d_wasserstein(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """Critic maximises E[D(x)] - E[D(G(z))]; we minimise the negation."""
    return {"real": -real_logits.mean(), "fake": fake_logits.mean()}


def d_hinge(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    return {"real": F.relu(1 - real_logits).mean(), "fake": F.relu(1 + fake_logits).mean()}


# ----------------------------------------------------------------- generator side


def g_nonsaturating(fake_logits: Tensor) -> Tensor:
    """-log D(G(z)) (Goodfellow et al. 2014, the practical variant)."""
    return F.softplus(-fake_logits).mean()


def g_minimax(fake_logits: Tensor) -> Tensor:
    """log(1 - D(G(z))): the original saturating objective."""
    return -F.softplus(fake_logits).mean()


def g_least_squares(fake_logits: Tensor) -> Tensor:
    return 0.5 * (fake_logits - 1).pow(2).mean()


def g_linear(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]: the generator loss of WGAN and of the hinge GAN."""
    return -fake_logits.mean()


# ----------------------------------------------------------------- penalties


def gradient_penalty(grad: Tensor) -> Tensor:
    """WGAN-GP two-sided penalty (||grad||_2 - 1)^2, per sample, averaged. grad: (B, ...)."""
    norms = grad.flatten(1).norm(2, dim=1)  # (B,)
    return (norms - 1).pow(2).mean()


def r1_penalty(grad: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): ||grad_x D(x)||^2 on real data. grad: (B, ...)."""
    return grad.flatten(1).pow(2).sum(dim=1).mean()


# ----------------------------------------------------------------- conditional and information terms


def aux_cross_entropy(class_logits: Tensor, labels: Tensor) -> Tensor:
    """AC-GAN's auxiliary classifier loss: -log C(y | x), averaged. class_logits: (B, K), labels: (B,)."""
    return F.cross_entropy(class_logits.float(), labels)


def categorical_information(code_logits: Tensor, codes: Tensor) -> Tensor:
    """InfoGAN's categorical term: -E log Q(c | x), the negative mutual-information lower bound up to
    the code's entropy. code_logits: (B, K), codes: (B,)."""
    return F.cross_entropy(code_logits.float(), codes)


def gaussian_information(mean: Tensor, codes: Tensor, logvar: Tensor | None = None) -> Tensor:
    """InfoGAN's continuous term: Gaussian negative log-likelihood of the codes under Q, summed over
    the codes and averaged over the batch, without the constant 0.5 log(2 pi). `logvar` None = unit
    variance (the fixed-variance choice: half the squared error). mean, codes, logvar: (B, C)."""
    err = (codes.float() - mean.float()).pow(2)
    if logvar is None:
        return 0.5 * err.sum(1).mean()
    logvar = logvar.float()
    return 0.5 * (logvar + err * torch.exp(-logvar)).sum(1).mean()


# ----------------------------------------------------------------- f-GAN divergences


class FDivergence(NamedTuple):
    """One f-divergence of f-GAN (Nowozin et al. 2016, Table 2 and Table 6), on the critic's raw
    output v. `activation` is g_f, mapping v into the domain of f*; `conjugate` is f*, the Fenchel
    conjugate of the generator function f; `conjugate_of_activation` is f*(g_f(v)) in a form that
    stays finite where composing the two would not (log of exp, 1 - exp). `generator_f` is f itself
    and `optimal_logit` the v with g_f(v) = f'(p / q), the optimal critic, from log(p / q)
    (both for tests and documentation)."""

    activation: Callable[[Tensor], Tensor]
    conjugate: Callable[[Tensor], Tensor]
    conjugate_of_activation: Callable[[Tensor], Tensor]
    generator_f: Callable[[Tensor], Tensor]
    optimal_logit: Callable[[Tensor], Tensor]


_LOG2 = math.log(2.0)

F_DIVERGENCES: dict[str, FDivergence] = {
    # KL(P || Q): f(u) = u log u; g_f(v) = v; f*(t) = exp(t - 1); T* = 1 + log(p/q).
    "kl": FDivergence(
        lambda v: v, lambda t: torch.exp(t - 1), lambda v: torch.exp(v - 1),
        lambda u: u * torch.log(u), lambda log_r: 1 + log_r),
    # KL(Q || P): f(u) = -log u; g_f(v) = -exp(-v); f*(t) = -1 - log(-t); T* = -q/p.
    "reverse_kl": FDivergence(
        lambda v: -torch.exp(-v), lambda t: -1 - torch.log(-t), lambda v: v - 1,
        lambda u: -torch.log(u), lambda log_r: log_r),
    # Pearson chi^2: f(u) = (u - 1)^2; g_f(v) = v; f*(t) = t^2 / 4 + t; T* = 2 (p/q - 1).
    "pearson": FDivergence(
        lambda v: v, lambda t: 0.25 * t * t + t, lambda v: 0.25 * v * v + v,
        lambda u: (u - 1).pow(2), lambda log_r: 2 * torch.expm1(log_r)),
    # Squared Hellinger: f(u) = (sqrt(u) - 1)^2; g_f(v) = 1 - exp(-v); f*(t) = t / (1 - t);
    # T* = 1 - sqrt(q/p). f*(g_f(v)) = exp(v) - 1.
    "hellinger": FDivergence(
        lambda v: -torch.expm1(-v), lambda t: t / (1 - t), lambda v: torch.expm1(v),
        lambda u: (torch.sqrt(u) - 1).pow(2), lambda log_r: 0.5 * log_r),
    # Jensen-Shannon (the paper's f, which is 2 JS): f(u) = -(u + 1) log((1 + u) / 2) + u log u;
    # g_f(v) = log 2 - log(1 + exp(-v)); f*(t) = -log(2 - exp(t)); T* = log(2p / (p + q)).
    # f*(g_f(v)) = softplus(v) - log 2.
    "js": FDivergence(
        lambda v: _LOG2 - F.softplus(-v), lambda t: -torch.log(2 - torch.exp(t)), lambda v: F.softplus(v) - _LOG2,
        lambda u: -(u + 1) * torch.log((1 + u) / 2) + u * torch.log(u), lambda log_r: log_r),
    # The original GAN divergence: f(u) = u log u - (u + 1) log(u + 1); g_f(v) = -log(1 + exp(-v));
    # f*(t) = -log(1 - exp(t)); T* = log(p / (p + q)). f*(g_f(v)) = softplus(v).
    "gan": FDivergence(
        lambda v: -F.softplus(-v), lambda t: -torch.log(-torch.expm1(t)), F.softplus,
        lambda u: u * torch.log(u) - (u + 1) * torch.log(u + 1), lambda log_r: log_r),
}


def f_divergence(name: str) -> FDivergence:
    return F_DIVERGENCES[name]


def d_f_divergence(real_logits: Tensor, fake_logits: Tensor, divergence: FDivergence) -> dict[str, Tensor]:
    """f-GAN critic loss: -(E_P[g_f(V(x))] - E_Q[f*(g_f(V(G(z))))]), the negated variational lower
    bound of D_f(P || Q); at the optimum -loss estimates the divergence."""
    real = -divergence.activation(real_logits.float()).mean()
    fake = divergence.conjugate_of_activation(fake_logits.float()).mean()
    return {"real": real, "fake": fake}


def g_f_divergence(fake_logits: Tensor, divergence: FDivergence) -> Tensor:
    """f-GAN generator loss: the paper's alternative update ("practical considerations" of its
    single-step algorithm), maximise E_Q[g_f(V(G(z)))] rather than minimise -E_Q[f*(g_f(V(G(z))))],
    as -log D(G(z)) replaces log(1 - D(G(z))) in the original GAN; the paper shows it keeps the
    saddle points and recommends it. Used here for every divergence."""
    return -divergence.activation(fake_logits.float()).mean()


# ----------------------------------------------------------------- registry


class AdversarialLoss(NamedTuple):
    discriminator: Callable[..., dict[str, Tensor]]
    generator: Callable[[Tensor], Tensor]
    uses_real_target: bool  # accepts one-sided label smoothing


ADVERSARIAL: dict[str, AdversarialLoss] = {
    "nonsaturating": AdversarialLoss(d_cross_entropy, g_nonsaturating, True),
    "minimax": AdversarialLoss(d_cross_entropy, g_minimax, True),
    "least_squares": AdversarialLoss(d_least_squares, g_least_squares, False),
    "wasserstein": AdversarialLoss(d_wasserstein, g_linear, False),
    "hinge": AdversarialLoss(d_hinge, g_linear, False),
    **{
        f"fgan_{name}": AdversarialLoss(partial(d_f_divergence, divergence=div),
                                        partial(g_f_divergence, divergence=div), False)
        for name, div in F_DIVERGENCES.items()
    },
}


def adversarial(name: str) -> AdversarialLoss:
    try:
        return ADVERSARIAL[name]
    except KeyError:
        raise ConfigError(f"unknown adversarial loss {name!r}; choose from {', '.join(ADVERSARIAL)}") from None
