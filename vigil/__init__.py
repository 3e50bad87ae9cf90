"""vigil: a safety supervisor and flight recorder for PyTorch inference."""

__version__ = "0.1.0"

__all__ = ["__version__"]
