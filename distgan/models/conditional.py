"""Class-conditional nets built around any architecture of distgan.models.

G(z, y): the class enters through a learned embedding joined to the noise, by concatenation
(`concat`: CGAN, Mirza & Osindero 2014) or, for archs that ask for it, by element-wise
multiplication with z (`mul`: the Keras AC-GAN example).

D(x, y), chosen by `model.d.conditioning`:
- `concat`: the label joins the input, as one-hot maps added as extra image channels (one per
  class: exact, and cheap for few classes) or one-hot features appended to 2-D points;
- `projection` (Miyato & Koyama 2018): logit(x) + <embed(y), features(x)>, features being the
  net's last hidden layer (flattened);
- `aux` (AC-GAN, Odena et al. 2017): D(x) alone, plus a class head on the same features
  (`class_logits`, (B, K)); y is not read.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.models import build_net
from distgan.models.outputs import check_outputs

OUTPUTS = ("logits", "features", "class_logits")
_LABEL_JOIN = {"acgan_keras": "mul"}  # arch -> how G takes the class (default concat)
EMBED_DIM = 50  # label embedding size joined to G's noise by concatenation


def _init_added(base: nn.Module, layer: nn.Module) -> None:
    """A layer the wrapper adds to `base`, initialised as the arch's source does where it says
    (`base.init_added`: acgan_keras, Keras's initializers); torch's default otherwise."""
    init = getattr(base, "init_added", None)
    if init is not None:
        init(layer)


class ConditionalGenerator(nn.Module):
    def __init__(self, base: nn.Module, num_classes: int, z_dim: int, join: str):
        super().__init__()
        self.base, self.join = base, join
        self.embed = nn.Embedding(num_classes, z_dim if join == "mul" else min(EMBED_DIM, num_classes))
        _init_added(base, self.embed)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        e = self.embed(y)  # (B, E)
        return self.base(z * e if self.join == "mul" else torch.cat([z, e], 1))


class ConditionalDiscriminator(nn.Module):
    def __init__(self, base: nn.Module, conditioning: str, num_classes: int, info: DataInfo):
        super().__init__()
        self.base, self.conditioning, self.num_classes = base, conditioning, num_classes
        self.images = info.kind == "images"
        features = feature_size(base, self._joined_shape(info))
        if conditioning == "projection":
            self.embed = nn.Embedding(num_classes, features)
            nn.init.normal_(self.embed.weight, 0.0, features**-0.5)
        elif conditioning == "aux":
            self.classify = nn.Linear(features, num_classes)
            _init_added(base, self.classify)

    def _joined_shape(self, info: DataInfo) -> tuple[int, ...]:
        if self.conditioning != "concat":
            return info.shape
        if self.images:
            return (info.shape[0] + self.num_classes, *info.shape[1:])
        return (info.shape[0] + self.num_classes,)

    def forward(self, x: Tensor, y: Optional[Tensor] = None, outputs: Optional[tuple[str, ...]] = None):
        """(B,) logits; with `outputs`, a dict of the named ones (`logits`, `features`, `class_logits`)."""
        names = ("logits",) if outputs is None else tuple(outputs)
        check_outputs(names, OUTPUTS)
        if self.conditioning in ("concat", "projection") and y is None:
            raise ValueError(f"a D with conditioning={self.conditioning} needs the labels y")
        if self.conditioning == "concat":
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)  # (B, K)
            if self.images:
                onehot = onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])  # (B, K, H, W)
            x = torch.cat([x, onehot], 1)
        out = self.base(x, outputs=("logits", "features"))
        h, logits = out["features"], out["logits"]  # (B, F), (B,)
        named = {"features": h}
        if self.conditioning == "projection":
            logits = logits + (self.embed(y) * h).sum(1)
        if self.conditioning == "aux":
            named["class_logits"] = self.classify(h)
        named["logits"] = logits
        if outputs is None:
            return logits
        return {n: named[n] for n in names}


@torch.no_grad()
def feature_size(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Width of a discriminator's `features` output for inputs of `shape` (eval mode: the probe leaves
    BatchNorm's running statistics as they were)."""
    was_training = net.training
    features = net.eval()(torch.zeros(1, *shape), outputs=("features",))["features"].shape[1]
    net.train(was_training)
    return features


def build_conditional_generator(key: str, net_cfg, model_cfg, info: DataInfo) -> ConditionalGenerator:
    join = _LABEL_JOIN.get(net_cfg.arch, "concat")
    z_in = model_cfg.z_dim if join == "mul" else model_cfg.z_dim + min(EMBED_DIM, info.num_classes)
    base = build_net("generator", key, net_cfg, dataclasses.replace(model_cfg, z_dim=z_in), info)
    return ConditionalGenerator(base, info.num_classes, model_cfg.z_dim, join)


def build_conditional_discriminator(key: str, net_cfg, model_cfg, info: DataInfo,
                                    conditioning: str) -> ConditionalDiscriminator:
    k = info.num_classes
    if conditioning == "concat":
        shape = (info.shape[0] + k, *info.shape[1:]) if info.kind == "images" else (info.shape[0] + k,)
        base_info = dataclasses.replace(info, shape=shape)
    else:
        base_info = info
    base = build_net("discriminator", key, net_cfg, model_cfg, base_info)
    return ConditionalDiscriminator(base, conditioning, k, info)
