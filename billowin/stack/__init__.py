"""The single-box stack: install the real binaries, start them, wait, stop them."""
