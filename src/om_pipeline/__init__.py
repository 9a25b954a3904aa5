"""ompipe: declarative recipes that take PyTorch vision models to Ascend .om models."""
from importlib import metadata

try:
    __version__ = metadata.version("om-pipeline")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
