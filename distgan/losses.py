"""Adversarial losses and penalties: pure functions of logits and tensors.

Each adversarial loss is a pair (discriminator loss, generator loss) selected by
name through `ADVERSARIAL`. All return a scalar mean over the batch, so summing
the losses of equally sized micro-batches and ranks averages the global batch.
"""

from __future__ import annotations

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
}


def adversarial(name: str) -> AdversarialLoss:
    try:
        return ADVERSARIAL[name]
    except KeyError:
        raise ConfigError(f"unknown adversarial loss {name!r}; choose from {', '.join(ADVERSARIAL)}") from None
