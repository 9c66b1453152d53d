"""Feature extractors for FID/KID/IS/precision-recall, chosen by `eval.features`.

- `digits`: the classifier shipped with distgan (distgan.metrics.classifier);
  on C-channel images (stacked digits) it reads each channel as one digit.
- `inception`: the standard FID InceptionV3 from `eval.inception_weights`.
- `module.path:callable`: `callable()` returns an nn.Module mapping (N, C, H, W)
  images in [-1, 1] to features (N, D), or to a dict with "features" and
  optionally "logits" (needed for is / class_acc). Any torchvision model works
  this way, e.g. `my_pkg.feats:resnet18_pool`.

Every extractor is wrapped into an `Extractor`: eval mode, no gradients, a
`key` naming it (and its weights) for the reference-statistics cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from distgan.errors import ConfigError
from distgan.plugins import import_object


@dataclass
class Extractor:
    net: nn.Module
    key: str  # names the extractor and its weights (cache key)
    num_features: int
    num_classes: int  # 0 = no logits
    kind: str  # digits | inception | module

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """(N, C, H, W) in [-1, 1] -> (features (N, D) float32, logits (N, K) or None)."""
        out = self.net(images)
        if isinstance(out, dict):
            feats, logits = out["features"], out.get("logits")
        elif isinstance(out, (tuple, list)):
            feats, logits = out
        else:
            feats, logits = out, None
        feats = feats.reshape(len(images), -1).float()
        return feats, (logits.reshape(len(images), -1).float() if logits is not None else None)


class _Inception(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        from distgan.metrics.inception import preprocess

        return self.net(preprocess(images))


def build_extractor(spec: str, *, inception_weights: str = "", sample_shape: tuple[int, ...] = (1, 32, 32),
                    device: torch.device = torch.device("cpu")) -> Extractor:
    if spec == "digits":
        from distgan.metrics import classifier
        from distgan.metrics.inception import file_digest

        net = classifier.load_classifier()
        key = f"digits-{file_digest(classifier.WEIGHTS)}"
        channels = sample_shape[0]
        if channels == 1:
            ext = Extractor(net, key, classifier.NUM_FEATURES, classifier.NUM_CLASSES, "digits")
        else:  # stacked digits: one digit per channel, 10**C joint classes
            ext = Extractor(classifier.ChannelDigitsClassifier(net, channels), f"{key}-c{channels}",
                            channels * classifier.NUM_FEATURES, classifier.NUM_CLASSES**channels, "digits")
    elif spec == "inception":
        from distgan.metrics.inception import NUM_CLASSES, NUM_FEATURES, file_digest, load_fid_inception

        net = _Inception(load_fid_inception(inception_weights))
        key = f"inception-{file_digest(Path(inception_weights).expanduser())}"
        ext = Extractor(net, key, NUM_FEATURES, NUM_CLASSES, "inception")
    elif ":" in spec:
        factory = import_object(spec, "eval.features")
        net = factory()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"eval.features={spec}: it returned {type(net).__name__}, not an nn.Module")
        ext = Extractor(net, "module-" + spec.replace(":", "-").replace(".", "_"), 0, 0, "module")
        probe_feats, probe_logits = ext(torch.zeros(2, *sample_shape))  # infer the output sizes
        ext.num_features = probe_feats.shape[1]
        ext.num_classes = probe_logits.shape[1] if probe_logits is not None else 0
    else:
        raise ConfigError(f"eval.features={spec!r}: expected digits, inception or module.path:callable")
    ext.net = ext.net.to(device).eval().requires_grad_(False)
    return ext
