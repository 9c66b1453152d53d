"""distgan.models.acgan_keras against Keras itself.

The seed's Keras `mnist_acgan` G and D are rebuilt in Keras 3 (torch backend, channels_first) layer
for layer, distgan's weights are copied into them, and both give the same outputs on the same z,
labels and images (D with dropout off); distgan's initial weights have the bounds and spread of
Keras's own initializers; and the acgan game's D and G losses have the gradients of the example's
compiled losses (binary + sparse categorical cross-entropy, D on [real; fake], G on twice the batch
with the "trick" labels), D's twice Keras's (distgan sums the real and fake means where Keras takes
the mean of the joined batch; a constant factor that Adam's update removes, docs/games.md).

Keras is in the `[test]` extra. Under CI=true a missing Keras fails these tests; elsewhere they skip.
Keras is imported by a fixture, so that a run that deselects these tests does not pay for it, and on
one xdist worker (the group). Importing it must leave torch's and NumPy's global state as it was
(checked; Python's `random`, which `rich` draws from at import, is put back), and each test restores
Python's, NumPy's and torch's generators after it: Keras seeds its unseeded initializers from
Python's `random`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from distgan.config import load_config
from distgan.data.base import Batch, DataInfo
from distgan.games import StepContext, build_game
from distgan.models.acgan_keras import TRUNCATED_STD, SameConv2d
from distgan.nn.dropout import StepDropout

pytestmark = [pytest.mark.xdist_group("keras"), pytest.mark.numeric]

CF = "channels_first"
INFO = DataInfo(kind="images", shape=(1, 28, 28), num_classes=10)
WEIGHTED = (nn.Linear, nn.Conv2d, nn.Embedding)


def _global_state() -> dict:
    return {"random": random.getstate(), "numpy": np.random.get_state()[1].tobytes(),
            "torch_rng": torch.get_rng_state().numpy().tobytes(), "dtype": torch.get_default_dtype(),
            "device": str(torch.get_default_device()), "threads": torch.get_num_threads(),
            "interop": torch.get_num_interop_threads(), "grad": torch.is_grad_enabled(),
            "matmul": torch.get_float32_matmul_precision(),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


@pytest.fixture(scope="module")
def keras():
    before = _global_state()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_BACKEND", "torch")  # read once, at Keras's import
        if os.environ.get("CI") == "true":
            import keras  # CI installs the [test] extra: there a missing Keras fails, never skips
        else:
            keras = pytest.importorskip("keras")
    assert keras.backend.backend() == "torch", "Keras was imported with another backend before this test"
    random.setstate(before["random"])  # rich, a Keras dependency, draws from it at import (its style ids)
    after = _global_state()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    keras.config.set_floatx("float32")  # whatever ~/.keras/keras.json says (its default)
    return keras


@contextlib.contextmanager
def _generators_kept():
    """Python's, NumPy's and torch's global generators as they were, after the block."""
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


@pytest.fixture(autouse=True)
def _restore_generators():
    with _generators_kept():
        yield


def _game(seed: int = 0):
    torch.manual_seed(seed)
    return build_game(load_config("configs/acgan_mnist_keras.yaml", []), INFO)


def _weighted(net: nn.Module) -> list[nn.Module]:
    """Conv, linear and embedding layers in module order: G's dense, convs, embedding; D's convs,
    real/fake head, class head (the order the Keras builders below return theirs in)."""
    return [m for m in net.modules() if isinstance(m, WEIGHTED)]


def _keras_layout(m: nn.Module, w: torch.Tensor) -> np.ndarray:
    """A torch weight or bias (or its gradient) in the layout of the Keras layer's."""
    w = w.detach()
    if isinstance(m, nn.Conv2d) and w.dim() == 4:
        w = w.permute(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    elif isinstance(m, nn.Linear) and w.dim() == 2:
        w = w.T  # (out, in) -> (in, out)
    return w.cpu().numpy()


def _params(m: nn.Module) -> list[torch.Tensor]:
    return [m.weight] + ([m.bias] if getattr(m, "bias", None) is not None else [])


def _keras_params(layer) -> list[torch.Tensor]:
    """The torch tensors behind a Keras layer's weights (kernel or embeddings, then bias)."""
    return [v.value for v in layer.weights]


def _copy(net: nn.Module, layers: list) -> None:
    mods = _weighted(net)
    assert len(mods) == len(layers)
    for m, layer in zip(mods, layers):
        layer.set_weights([_keras_layout(m, p) for p in _params(m)])


def keras_generator(keras, latent: int = 100, classes: int = 10):
    """The seed's build_generator, channels_first; (model, weighted layers in distgan's order)."""
    L = keras.layers
    dense = [L.Dense(1024, activation="relu"), L.Dense(128 * 7 * 7, activation="relu")]
    convs = [L.Conv2D(256, 5, padding="same", activation="relu", kernel_initializer="glorot_normal", data_format=CF),
             L.Conv2D(128, 5, padding="same", activation="relu", kernel_initializer="glorot_normal", data_format=CF),
             L.Conv2D(1, 2, padding="same", activation="tanh", kernel_initializer="glorot_normal", data_format=CF)]
    cnn = keras.Sequential([keras.Input((latent,)), dense[0], dense[1], L.Reshape((128, 7, 7)),
                            L.UpSampling2D(2, data_format=CF), convs[0], L.UpSampling2D(2, data_format=CF),
                            convs[1], convs[2]])
    z, image_class = keras.Input((latent,)), keras.Input((1,), dtype="int32")
    embed = L.Embedding(classes, latent, embeddings_initializer="glorot_normal")
    h = L.Multiply()([z, L.Flatten()(embed(image_class))])  # z (.) embedding(class)
    return keras.Model([z, image_class], cnn(h)), [*dense, *convs, embed]


def keras_discriminator(keras, classes: int = 10):
    """The seed's build_discriminator, channels_first: Keras defaults (glorot_uniform, zero biases,
    LeakyReLU 0.3) wherever it names nothing."""
    L = keras.layers
    convs = [L.Conv2D(c, 3, padding="same", strides=s, data_format=CF)
             for c, s in ((32, 2), (64, 1), (128, 2), (256, 1))]
    body = [keras.Input((1, 28, 28))]
    for conv in convs:
        body += [conv, L.LeakyReLU(), L.Dropout(0.3)]
    # The maps flattened as they lie, (C, H, W), as the example's Theano-era Flatten did (a
    # channels_first Flatten in Keras 3 would move C last first: the same net with permuted weights).
    cnn = keras.Sequential([*body, L.Flatten(data_format="channels_last")])
    image = keras.Input((1, 28, 28))
    features = cnn(image)
    heads = [L.Dense(1, activation="sigmoid", name="generation"),
             L.Dense(classes, activation="softmax", name="auxiliary")]
    return keras.Model(image, [heads[0](features), heads[1](features)]), [*convs, *heads]


@pytest.fixture(scope="module")
def nets(keras):
    """distgan's acgan game (configs/acgan_mnist_keras.yaml) and the example's nets in Keras, holding
    distgan's weights; the tests leave the weights as they are."""
    with _generators_kept():  # a module fixture: set up before, and outside, the per-test restore
        game = _game()
        Gk, g_layers = keras_generator(keras)
        Dk, d_layers = keras_discriminator(keras)
    G, D = game.nets["G"], game.nets["D"]
    _copy(G, g_layers)
    _copy(D, d_layers)
    return game, G, D, Gk, Dk, g_layers, d_layers


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def test_parameter_counts_are_the_examples(nets):
    game, G, D, Gk, Dk, _, _ = nets
    assert sum(p.numel() for p in G.parameters()) == Gk.count_params() == 8_172_521
    assert sum(p.numel() for p in D.parameters()) == Dk.count_params() == 525_835


@pytest.mark.parametrize("side", [5, 7, 8, 14])
@pytest.mark.parametrize("stride", [1, 2])
def test_same_conv_pads_as_keras(keras, side, stride):
    """TensorFlow's 'same': an even side at stride 2 pads 0 before and 1 after; an odd one 1 and 1."""
    torch.manual_seed(side)
    conv = SameConv2d(3, 4, 3, stride)
    layer = keras.layers.Conv2D(4, 3, strides=stride, padding="same", data_format=CF)
    layer.build((None, 3, side, side))
    layer.set_weights([_keras_layout(conv, conv.weight), conv.bias.detach().numpy()])
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        ours = conv(x)
    theirs = _np(layer(x))
    assert ours.shape[-1] == math.ceil(side / stride) and ours.shape == theirs.shape
    assert np.abs(ours.numpy() - theirs).max() <= 1e-5


def test_outputs_match_keras(nets):
    """G's images, D's real/fake probability and class probabilities on the same inputs: <= 1e-5."""
    game, G, D, Gk, Dk, _, _ = nets
    D.eval()  # D's dropout off (Keras: training=False)
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(4, 100, generator=gen) * 2 - 1
    y = torch.tensor([0, 3, 7, 9])
    try:
        with torch.no_grad():
            fake = G(z, y)
            images = torch.cat([fake, torch.rand(4, 1, 28, 28, generator=gen) * 2 - 1])  # G's and noise
            out = D(images, None, outputs=("logits", "class_logits"))
    finally:
        D.train()
    fake_k = _np(Gk([z, y[:, None]], training=False))
    real_fake_k, classes_k = (_np(t) for t in Dk(images, training=False))
    diffs = {"G": np.abs(fake.numpy() - fake_k).max(),
             "D real/fake": np.abs(torch.sigmoid(out["logits"]).numpy() - real_fake_k[:, 0]).max(),
             "D classes": np.abs(torch.softmax(out["class_logits"], 1).numpy() - classes_k).max()}
    print("max |distgan - keras|:", {k: f"{v:.1e}" for k, v in diffs.items()})
    assert all(v <= 1e-5 for v in diffs.values()), diffs


def _keras_initializer(keras, layer):
    return layer.embeddings_initializer if isinstance(layer, keras.layers.Embedding) else layer.kernel_initializer


def test_initializers_are_keras(keras, nets):
    """Per layer: distgan's initial weights and a draw of Keras's own initializer for that layer have
    the same bounds, spread and distribution (glorot_uniform: within +-sqrt(6 / fans), reaching it;
    glorot_normal: truncated at 2 of its deviations, deviation sqrt(2 / fans)); biases 0."""
    game, G, D, Gk, Dk, g_layers, d_layers = nets
    for net, layers in ((G, g_layers), (D, d_layers)):
        for i, (m, layer) in enumerate(zip(_weighted(net), layers)):
            ours = _keras_layout(m, m.weight)
            shape = ours.shape
            init = _keras_initializer(keras, layer)
            theirs = _np(type(init).from_config(init.get_config() | {"seed": i})(shape))  # a fresh Keras draw
            ours, theirs = ours.ravel(), theirs.ravel()
            fans = (shape[-2] + shape[-1]) * math.prod(shape[:-2])  # Keras: (kh, kw, in, out), (in, out)
            kind = type(init).__name__
            n = ours.size
            if kind == "GlorotUniform":
                bound, std = math.sqrt(6 / fans), math.sqrt(2 / fans)  # U(-l, l): std l / sqrt(3)
                se = 0.45 / math.sqrt(n)  # relative s.e. of a sample std, kurtosis 1.8
            else:
                assert kind == "GlorotNormal", kind
                bound, std = 2 * math.sqrt(2 / fans) / TRUNCATED_STD, math.sqrt(2 / fans)
                se = 0.6 / math.sqrt(n)  # kurtosis of a normal truncated at 2 sigma: 2.36
            where = f"{type(m).__name__} {tuple(m.weight.shape)} ({kind})"
            assert np.abs(ours).max() <= bound * (1 + 1e-6), where
            # Keras's torch backend truncates by taking the first of 4 normal draws inside the bounds,
            # the last one when none is (0.0455^4: 4e-6 of the weights, 3 of G's 819,200-weight convs).
            assert (np.abs(theirs) > bound * (1 + 1e-6)).mean() <= (1e-4 if kind == "GlorotNormal" else 0), where
            for sample in (ours, theirs):
                assert np.abs(sample).max() >= bound * (1 - 20 / n), where  # reaches the bound
                assert abs(sample.std() / std - 1) <= 6 * se, (where, sample.std(), std)
            sub = slice(0, 20000)
            assert stats.ks_2samp(ours[sub], theirs[sub]).pvalue > 1e-4, where
            if getattr(m, "bias", None) is not None:
                assert not m.bias.any(), where


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params))


def test_losses_have_the_examples_gradients(keras, nets):
    """One D step and one G step of distgan's acgan game (configs/acgan_mnist_keras.yaml) against the
    example's losses on the same samples, dropout off: D's gradients are twice Keras's (the factor
    Adam removes), G's equal them."""
    game, G, D, Gk, Dk, g_layers, d_layers = nets
    dropouts = [m for m in D.modules() if isinstance(m, StepDropout)]
    for m in dropouts:
        m.p = 0.0  # the masks are the step's, not Keras's: compare the losses without them
    seen = []  # G's (z, y) of each call, to give Keras the same samples
    hook = G.register_forward_hook(lambda mod, args, out: seen.append(args))
    try:
        _compare_steps(keras, game, G, D, Gk, Dk, g_layers, d_layers, seen)
    finally:
        hook.remove()
        for m in dropouts:
            m.p = 0.3


def _compare_steps(keras, game, G, D, Gk, Dk, g_layers, d_layers, seen: list, B: int = 2) -> None:
    gen = torch.Generator().manual_seed(2)
    batch = Batch(x=torch.rand(B, 1, 28, 28, generator=gen) * 2 - 1, y=torch.arange(B) % 10)
    bce, sce = keras.losses.BinaryCrossentropy(), keras.losses.SparseCategoricalCrossentropy()

    def ctx():
        return StepContext((0, 0), total=B, offset=0, local_batch=B, device=torch.device("cpu"))

    def compare(net: nn.Module, loss: torch.Tensor, layers: list, keras_loss: torch.Tensor, factor: float):
        """distgan's gradients of `loss` against `factor` x Keras's of `keras_loss`, weights and biases."""
        mods = _weighted(net)
        ours = _grads(loss, [p for m in mods for p in _params(m)])
        theirs = _grads(keras_loss, [p for layer in layers for p in _keras_params(layer)])
        owners = [m for m in mods for _ in _params(m)]
        assert len(ours) == len(theirs)
        for m, a, b in zip(owners, ours, theirs):
            a, b = _keras_layout(m, a), _np(b) * factor
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * np.abs(b).max() + 1e-7, type(m).__name__

    # D: distgan's real + fake + aux_real + aux_fake against Keras's loss on the joined batch.
    ours = sum(game.d_loss(batch, ctx()).values())
    z, y_fake = seen[-1]
    x = torch.cat([batch.x, Gk([z, y_fake[:, None]], training=False).detach()])  # [real; fake]
    real_fake, classes = Dk(x, training=False)
    target = torch.cat([torch.ones(B), torch.zeros(B)])[:, None]
    theirs = bce(target, real_fake) + sce(torch.cat([batch.y, y_fake]), classes)
    compare(D, ours, d_layers, theirs, 2.0)

    # G: adv + aux on 2 x B against Keras's combined model with the "trick" labels (all real).
    ours = sum(game.g_loss(None, ctx()).values())
    z, y = seen[-1]
    assert z.shape[0] == 2 * B
    real_fake, classes = Dk(Gk([z, y[:, None]], training=False), training=False)
    theirs = bce(torch.ones(2 * B, 1), real_fake) + sce(y, classes)
    compare(G, ours, g_layers, theirs, 1.0)
