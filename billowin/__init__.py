"""Billowin: push to GitHub, and your app is live at a name that never changes."""

__version__ = "0.1.0"
