"""drover: keep a herd of long-running workers alive on many Linux hosts."""

__version__ = "0.1.0"
