"""Language runtimes: which version an app asks for, and where it comes from.

requests.py   the version files, read the way Heroku's buildpacks read them
resolve.py    a request against what the providers offer (or the default: the newest stable)
providers.py  the providers (Debian's suites, the npm registry, the Go proxy, the publishers)
fetch.py      their downloads: checksums, cached offer lists, unreachable servers
choice.py     ``Runtimes``: the providers of ``BILLOWIN_RUNTIME_PROVIDERS`` asked in order
"""
