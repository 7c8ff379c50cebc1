"""lucid's version, in a module of its own: codegen keys its disk cache by it, and importing it does
not import the package's public API (whose `lucid.__version__` re-exports it)."""

__version__ = "0.1.0"
