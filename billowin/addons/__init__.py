"""Add-ons: Postgres and Redis services attached to apps (``service.py`` is where to start)."""
