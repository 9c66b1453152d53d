"""distgan: classic GAN variants at scale with one Accelerate trainer."""

__version__ = "0.1.0"
