"""`cricket` commands: influx (to be written)."""

from cricket.cli import app  # noqa: F401
