"""`cricket` commands: evaluate (to be written)."""

from cricket.cli import app  # noqa: F401
