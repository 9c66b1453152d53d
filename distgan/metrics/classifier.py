"""A small digit classifier for evaluating generators of the built-in `digits` data offline.

Its penultimate activations (128-d) are the features of FID/KID/precision-recall
and its logits those of the Inception Score and class agreement, as InceptionV3
is for natural images. The weights shipped in the package
(`distgan/metrics/digits_classifier.safetensors`) are produced by

    distgan eval train-digits-classifier

which trains on a fixed 80% split of scikit-learn's digits at 32x32 (seed 0,
CPU, one thread, a few seconds) and reports the accuracy on the other 20%.
Inputs at any resolution are resized to 32x32 (bilinear, antialiased), so real
and generated images of one run always go through the same resize.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RESOLUTION = 32
NUM_FEATURES = 128
NUM_CLASSES = 10
WEIGHTS = Path(__file__).with_name("digits_classifier.safetensors")

# Training recipe, fixed: changing any of these changes the shipped weights.
_SEED = 0
_EPOCHS = 12
_BATCH = 64
_LR = 2e-3
_HOLDOUT = 0.2
_MAX_SHIFT = 2  # random translation in pixels (generated digits are rarely centred exactly)


class DigitsClassifier(nn.Module):
    """(N, 1, H, W) in [-1, 1] -> (features (N, 128), logits (N, 10))."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 16, 16)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 64, 8, 8)
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 64, 4, 4)
            nn.Flatten(), nn.Linear(64 * 4 * 4, NUM_FEATURES), nn.ReLU(),  # (N, 128)
        )
        self.head = nn.Linear(NUM_FEATURES, NUM_CLASSES)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = resize(x)
        features = self.body(x)
        return features, self.head(features)


class ChannelDigitsClassifier(nn.Module):
    """The digits classifier read channel by channel, for stacked digits (one digit per channel).

    (N, C, H, W) -> (features (N, C * 128): the channels' features side by side,
    logits (N, 10**C): log-probabilities of the joint class, the sum of the
    channels' log-softmax, class index sum_c d_c * 10**(C-1-c) as in
    distgan.data.builtin.stacked_label). Its argmax is each channel's own argmax.
    """

    def __init__(self, net: DigitsClassifier, channels: int) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, c = x.shape[:2]
        if c != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {c}")
        features, logits = self.net(x.reshape(n * c, 1, *x.shape[2:]))
        logp = F.log_softmax(logits.float(), dim=1).reshape(n, c, NUM_CLASSES)
        joint = logp[:, 0]  # (N, 10)
        for i in range(1, c):
            joint = (joint[:, :, None] + logp[:, i, None, :]).reshape(n, -1)  # (N, 10**(i+1))
        return features.reshape(n, c * NUM_FEATURES), joint


def resize(x: Tensor) -> Tensor:
    x = x.float().clamp(-1, 1)
    if x.shape[-1] != RESOLUTION or x.shape[-2] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False, antialias=True)
    return x


def load_classifier(path: Path = WEIGHTS) -> DigitsClassifier:
    from safetensors.torch import load_file

    from distgan.errors import ConfigError

    if not Path(path).is_file():
        raise ConfigError(
            f"eval.features=digits: weights file {path} is missing; create it with "
            f"`distgan eval train-digits-classifier`"
        )
    net = DigitsClassifier()
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)


def split(n: int, seed: int = _SEED) -> tuple[Tensor, Tensor]:
    """(train indices, held-out indices) of the digits data: a fixed permutation of range(n)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(round(n * (1 - _HOLDOUT)))
    return perm[:cut], perm[cut:]


def _shift(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random translation by up to _MAX_SHIFT pixels, padding with the background (-1)."""
    n, _, h, w = x.shape
    padded = F.pad(x, [_MAX_SHIFT] * 4, value=-1.0)
    dx, dy = (torch.randint(0, 2 * _MAX_SHIFT + 1, (n,), generator=gen) for _ in range(2))
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def accuracy(net: DigitsClassifier, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((net(x)[1].argmax(1) == y).float().mean())


def train_classifier(out: Path = WEIGHTS, log=print) -> dict:
    """Train with the fixed recipe above and save safetensors weights to `out`."""
    from safetensors.torch import save_file

    from distgan.data.builtin import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same floating-point reductions on every machine
    try:
        t0 = time.perf_counter()
        x, y = load_digits(RESOLUTION)
        train_idx, test_idx = split(len(x))
        torch.manual_seed(_SEED)
        net = DigitsClassifier()
        opt = torch.optim.Adam(net.parameters(), lr=_LR)
        gen = torch.Generator().manual_seed(_SEED)
        for epoch in range(_EPOCHS):
            net.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            for start in range(0, len(order), _BATCH):
                idx = order[start:start + _BATCH]
                loss = F.cross_entropy(net(_shift(x[idx], gen))[1], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            net.eval()
            log(f"epoch {epoch + 1}/{_EPOCHS}: loss {loss.item():.4f}, "
                f"held-out accuracy {accuracy(net, x[test_idx], y[test_idx]):.4f}")
        result = {"train_accuracy": accuracy(net, x[train_idx], y[train_idx]),
                  "test_accuracy": accuracy(net, x[test_idx], y[test_idx]),
                  "seconds": time.perf_counter() - t0, "path": str(out)}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(out).with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
                  metadata={"recipe": f"seed={_SEED} epochs={_EPOCHS} batch={_BATCH} lr={_LR} "
                                      f"holdout={_HOLDOUT} shift={_MAX_SHIFT}",
                            "test_accuracy": f"{result['test_accuracy']:.4f}"})
        tmp.chmod(0o644)  # package data: readable by everyone
        tmp.replace(out)
        return result
    finally:
        torch.set_num_threads(threads)
