"""f-GAN (Nowozin et al. 2016): each divergence's output activation g_f and conjugate f* against
the paper's closed forms (Table 2 / Table 6), and the variational estimate with the optimal critic
T*(x) = f'(p(x) / q(x)) between two known 1-D Gaussians equal to the true divergence."""

import math

import pytest
import torch

from distgan import losses
from distgan.errors import ConfigError

NAMES = ["kl", "reverse_kl", "pearson", "hellinger", "js", "gan"]
V = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5], dtype=torch.float64)

# The paper's Table 6 as written there, term by term.
ACTIVATION = {
    "kl": lambda v: v,
    "reverse_kl": lambda v: -math.exp(-v),
    "pearson": lambda v: v,
    "hellinger": lambda v: 1 - math.exp(-v),
    "js": lambda v: math.log(2) - math.log(1 + math.exp(-v)),
    "gan": lambda v: -math.log(1 + math.exp(-v)),
}
CONJUGATE = {
    "kl": lambda t: math.exp(t - 1),
    "reverse_kl": lambda t: -1 - math.log(-t),
    "pearson": lambda t: 0.25 * t * t + t,
    "hellinger": lambda t: t / (1 - t),
    "js": lambda t: -math.log(2 - math.exp(t)),
    "gan": lambda t: -math.log(1 - math.exp(t)),
}


@pytest.mark.parametrize("name", NAMES)
def test_activation_and_conjugate_match_the_paper(name):
    div = losses.f_divergence(name)
    for v in V.tolist():
        t = ACTIVATION[name](v)
        assert div.activation(torch.tensor(v, dtype=torch.float64)).item() == pytest.approx(t, rel=1e-12, abs=1e-12)
        assert div.conjugate(torch.tensor(t, dtype=torch.float64)).item() == pytest.approx(CONJUGATE[name](t), rel=1e-12)
        # The stable composite used in the loss is the composition.
        assert div.conjugate_of_activation(torch.tensor(v, dtype=torch.float64)).item() == pytest.approx(
            CONJUGATE[name](t), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_conjugate_is_fenchel_conjugate_of_f(name):
    """f*(t) = sup_u (t u - f(u)), reached at u with f'(u) = t: f*(f'(u)) = u f'(u) - f(u)."""
    div = losses.f_divergence(name)
    u = torch.tensor([0.3, 0.9, 1.0, 2.0, 4.5], dtype=torch.float64, requires_grad=True)
    f = div.generator_f(u)
    (fprime,) = torch.autograd.grad(f.sum(), u)
    u, f = u.detach(), f.detach()
    # f(1) = 0, except the GAN divergence's f, which the paper leaves at 2 JS - log 4.
    f_one = -math.log(4) if name == "gan" else 0.0
    assert div.generator_f(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(f_one, abs=1e-12)
    torch.testing.assert_close(div.conjugate(fprime), u * fprime - f, rtol=1e-10, atol=1e-12)
    # The optimal logit maps through g_f onto T* = f'(p / q).
    torch.testing.assert_close(div.activation(div.optimal_logit(torch.log(u))), fprime, rtol=1e-10, atol=1e-12)


def _gauss_logpdf(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))


def _quantile_samples(mu, sigma, n=200_000):
    """Deterministic, evenly spread samples of N(mu, sigma^2): the (i + 1/2) / n quantiles."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return mu + sigma * torch.special.ndtri(p)


@pytest.mark.parametrize("name", NAMES)
def test_optimal_critic_estimate_equals_true_divergence(name):
    """P = N(0, 1), Q = N(0.7, 1.3^2): -D loss with V = the optimal logit estimates D_f(P || Q) =
    int q f(p / q), computed here by quadrature (and in closed form for KL)."""
    div = losses.f_divergence(name)
    (mp, sp), (mq, sq) = (0.0, 1.0), (0.7, 1.3)

    def log_ratio(x):
        return _gauss_logpdf(x, mp, sp) - _gauss_logpdf(x, mq, sq)

    xp, xq = _quantile_samples(mp, sp), _quantile_samples(mq, sq)
    terms = losses.ADVERSARIAL[f"fgan_{name}"].discriminator(
        div.optimal_logit(log_ratio(xp)).double(), div.optimal_logit(log_ratio(xq)).double())
    estimate = -(terms["real"] + terms["fake"]).item()

    grid = torch.linspace(-14, 14, 400_001, dtype=torch.float64)
    q = torch.exp(_gauss_logpdf(grid, mq, sq))
    truth = torch.trapezoid(q * div.generator_f(torch.exp(log_ratio(grid))), grid).item()
    if name == "kl":
        closed = math.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5
        assert truth == pytest.approx(closed, rel=1e-6)
    assert abs(truth) > 0.01
    assert estimate == pytest.approx(truth, rel=2e-3, abs=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_fgan_losses_are_selectable_and_finite_for_large_logits(name):
    loss = losses.adversarial(f"fgan_{name}")
    assert not loss.uses_real_target
    logits = torch.tensor([-30.0, -5.0, 0.0, 5.0, 20.0])
    d = loss.discriminator(logits, logits)
    assert set(d) == {"real", "fake"} and all(torch.isfinite(t) for t in d.values())
    g = loss.generator(logits)
    assert torch.isfinite(g)
    # Generator loss: the paper's alternative update, -E_Q[g_f(V(G(z)))].
    torch.testing.assert_close(g, -losses.f_divergence(name).activation(logits).mean())


def test_unknown_divergence_is_one_clear_error():
    with pytest.raises(ConfigError, match="fgan_kl"):
        losses.adversarial("fgan_tv")
