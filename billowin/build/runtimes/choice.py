"""``Runtimes``: the runtime an app gets, from the providers of ``BILLOWIN_RUNTIME_PROVIDERS``.

The app's version file (``requests.read_request``) is matched against every reachable
provider's offer; the newest version that satisfies it wins, and among providers offering that
same version the first in order. Without a version file the newest stable version wins
(``resolve.choose``): Debian's stable suites, never its testing one; Node's newest LTS line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from billowin.build.runtimes import resolve
from billowin.build.runtimes.fetch import Unreachable
from billowin.build.runtimes.providers import DebianSuites, GoFromProxy, NodeFromNpm, Upstream
from billowin.build.runtimes.requests import RuntimeRequest, read_request
from billowin.ports import RuntimeProvider
from billowin.settings import Settings
from billowin.stack.tools import load_versions

LogLine = Callable[[str], None]
AUTO = ("upstream", "npm", "goproxy", "debian")


@dataclass(frozen=True)
class Chosen:
    language: str
    version: str
    provider: RuntimeProvider
    request: RuntimeRequest | None

    @property
    def asked(self) -> str:
        if self.request is None:
            return "no version file: the newest stable version"
        return f"{self.request.source} asks for {self.request.requirement!r}"


class Runtimes:
    def __init__(self, providers: Sequence[RuntimeProvider]) -> None:
        self.providers = list(providers)

    def choose(self, language: str, src: Path | None, log: LogLine) -> Chosen:
        request = read_request(src, language) if src is not None else None
        offers: dict[str, list[str]] = {}
        for provider in self.providers:
            try:
                offers[provider.name] = (
                    provider.offered(language) if request is not None else provider.defaults(language)
                )
            except Unreachable as exc:
                log(f"-----> Runtime provider {provider.name} skipped: {exc.message}")
        name, version = resolve.choose(request, offers, language=language)
        provider = next(p for p in self.providers if p.name == name)
        return Chosen(language, version, provider, request)


def runtimes_from(settings: Settings) -> Runtimes:
    """The providers ``BILLOWIN_RUNTIME_PROVIDERS`` names, in its order."""
    spec = load_versions(settings.versions_file)
    tables = spec.get("runtimes", {})
    suite = tables.get("on", {}).get("suite", spec["base-image"]["suite"])
    cache = settings.cache_dir / "runtimes"
    packages = {k: v for k, v in spec["languages"].items() if isinstance(v, list)}
    make: dict[str, Callable[[], RuntimeProvider]] = {
        "upstream": lambda: Upstream(cache, suite),
        "npm": lambda: NodeFromNpm(settings.npm_registry, cache, suite),
        "goproxy": lambda: GoFromProxy(settings.goproxy, cache, suite),
        "debian": lambda: DebianSuites(tables.get("debian", {}), packages),
    }
    names = AUTO if settings.runtime_providers == "auto" else tuple(settings.runtime_providers.split(","))
    return Runtimes([make[name]() for name in names])
