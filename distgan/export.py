"""`distgan export RUN --out G.safetensors`: a finished run's sampling nets as one safetensors file,
which distgan.runs.open_run opens again (and `distgan sample` samples from) without the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from distgan.runs import EXPORT_FORMAT, open_run


def export_safetensors(source: Path, out: Path, use_ema: bool = True) -> Path:
    """The sampling nets (EMA weights by default) of a run as one safetensors file:
    tensors named `<net>.<param>`, the resolved config as JSON in the metadata.
    No optimizer, discriminator, RNG or pickled object goes in."""
    from safetensors.torch import save_file

    run = open_run(source, use_ema=use_ema)
    tensors = {f"{name}.{key}": t.detach().contiguous().clone()
               for name, net in run.nets.items() for key, t in net.state_dict().items()}
    metadata = {"format": EXPORT_FORMAT, "nets": json.dumps(sorted(run.nets)), "ema": json.dumps(use_ema),
                "config": json.dumps(run.cfg.to_dict()), "data_info": json.dumps(run.game.info.to_record())}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o666 & ~_umask())  # safetensors creates its file 0600; an export is meant to be shared
    tmp.replace(out)
    return out


def _umask() -> int:
    """The process's umask (read by setting it, the only portable way, and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
