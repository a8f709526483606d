"""Turning a repository at one commit into a pushed image: source, detection, builders."""
