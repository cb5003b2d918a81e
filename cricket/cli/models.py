"""`cricket` commands: models (to be written)."""

from cricket.cli import app  # noqa: F401
