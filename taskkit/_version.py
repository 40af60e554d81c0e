"""The version of taskkit: read by the package, the build and ``taskkit --version``."""

__version__ = "0.1.0"
