"""Opportune's language server and completion engine."""

__version__ = "0.1.0"
