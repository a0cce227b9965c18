"""The package's version, in a module of its own so that any part can name it
without importing the package's ``__init__`` (and with it every part)."""

__version__ = "0.1.0"
