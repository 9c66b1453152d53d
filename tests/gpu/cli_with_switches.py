"""The distgan CLI with diagnosis switches from the environment (device checks only):
DIAG_CUDNN_OFF=1 runs without cuDNN (PyTorch's native convolutions)."""
import os
import sys

import torch

if os.environ.get("DIAG_CUDNN_OFF"):
    torch.backends.cudnn.enabled = False
from distgan.cli import main  # noqa: E402

raise SystemExit(main(sys.argv[1:]))
