"""adanat: adaptive generation policies for non-autoregressive (ENAT/MaskGIT) image generators."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adanat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
