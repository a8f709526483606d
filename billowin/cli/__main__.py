"""``python -m billowin.cli``."""

from billowin.cli import app

app()
