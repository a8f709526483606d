"""One module per real system, each behind a small interface from ``billowin.ports``.

Each adapter is the only place its library's exceptions are seen: they are
translated into ``billowin.errors`` at the boundary.
"""
