"""The Billowin HTTP API (FastAPI)."""
