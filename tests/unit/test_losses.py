import math

import pytest
import torch

from distgan import losses


def test_cross_entropy_values_on_known_logits():
    real = torch.tensor([0.0, 2.0])
    fake = torch.tensor([0.0, -2.0])
    terms = losses.d_cross_entropy(real, fake)
    # -log sigmoid(l) for real, -log(1 - sigmoid(l)) for fake
    expect_real = (math.log(2) + math.log1p(math.exp(-2))) / 2
    expect_fake = (math.log(2) + math.log1p(math.exp(-2))) / 2
    assert terms["real"].item() == pytest.approx(expect_real, rel=1e-6)
    assert terms["fake"].item() == pytest.approx(expect_fake, rel=1e-6)


def test_label_smoothing_raises_real_loss_of_confident_logits():
    real = torch.tensor([5.0, 5.0])
    fake = torch.tensor([-5.0])
    plain = losses.d_cross_entropy(real, fake)["real"]
    smooth = losses.d_cross_entropy(real, fake, real_target=0.9)["real"]
    # target 0.9: loss = -(0.9 log s + 0.1 log(1 - s))
    s = torch.sigmoid(torch.tensor(5.0))
    assert smooth.item() == pytest.approx(-(0.9 * math.log(s) + 0.1 * math.log(1 - s)), rel=1e-5)
    assert smooth > plain


def test_generator_losses_signs_and_values():
    logits = torch.tensor([1.0, -1.0, 3.0])
    assert losses.g_nonsaturating(logits).item() == pytest.approx(
        sum(math.log1p(math.exp(-v)) for v in [1.0, -1.0, 3.0]) / 3, rel=1e-6)
    assert losses.g_minimax(logits).item() == pytest.approx(
        -sum(math.log1p(math.exp(v)) for v in [1.0, -1.0, 3.0]) / 3, rel=1e-6)
    assert losses.g_least_squares(logits).item() == pytest.approx(0.5 * (0 + 4 + 4) / 3)
    assert losses.g_linear(logits).item() == pytest.approx(-1.0)
    # G improves (loss falls) as D's logits on fakes rise, for every G loss.
    for name, pair in losses.ADVERSARIAL.items():
        lo, hi = pair.generator(torch.tensor([-1.0])), pair.generator(torch.tensor([0.5]))
        assert hi < lo, name


def test_discriminator_losses_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-0.5, 1.5])
    ls = losses.d_least_squares(real, fake)
    assert ls["real"].item() == pytest.approx(0.5 * (1 + 1) / 2)
    assert ls["fake"].item() == pytest.approx(0.5 * (0.25 + 2.25) / 2)
    w = losses.d_wasserstein(real, fake)
    assert (w["real"] + w["fake"]).item() == pytest.approx(-(1.0 - 0.5))
    h = losses.d_hinge(real, fake)
    assert h["real"].item() == pytest.approx((0 + 1) / 2)
    assert h["fake"].item() == pytest.approx((0.5 + 2.5) / 2)
    # D improves as real logits rise and fake logits fall, for every D loss.
    for name, pair in losses.ADVERSARIAL.items():
        worse = sum(pair.discriminator(torch.tensor([-0.5]), torch.tensor([0.5])).values())
        better = sum(pair.discriminator(torch.tensor([0.5]), torch.tensor([-0.5])).values())
        assert better < worse, name


def test_gradient_penalty_and_r1_on_known_gradients():
    grad = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    assert losses.gradient_penalty(grad).item() == pytest.approx(((5 - 1) ** 2 + 0) / 2)
    assert losses.r1_penalty(grad).item() == pytest.approx((25 + 1) / 2)


def test_gradient_penalty_through_autograd_of_a_linear_critic():
    # D(x) = w.x has grad w everywhere: penalty (|w| - 1)^2, and it is differentiable in w.
    w = torch.tensor([0.6, 0.8, 1.0], requires_grad=True)
    x = torch.randn(4, 3, requires_grad=True)
    (grad,) = torch.autograd.grad((x @ w).sum(), x, create_graph=True)
    gp = losses.gradient_penalty(grad)
    assert gp.item() == pytest.approx((math.sqrt(2.0) - 1) ** 2, rel=1e-5)
    gp.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_unknown_loss_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown adversarial loss 'nope'"):
        losses.adversarial("nope")
