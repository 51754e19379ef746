"""prefkit: SFT and preference optimisation for small language models."""

__version__ = "0.1.0"
