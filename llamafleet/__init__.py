"""llamafleet: a Kubernetes-native distributed inference cluster for llama.cpp."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llamafleet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
