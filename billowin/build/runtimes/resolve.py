"""Which offered runtime version (and from which provider) satisfies what an app asks for.

Each :class:`~.requests.RuntimeRequest` is matched by its ``kind``:

===============  ==============================================================
exact-or-prefix  ``3.14`` is any 3.14.x, ``3.14.2`` only 3.14.2, ``3`` any 3.x
pep440           a ``packaging`` specifier set (``>=3.12,<3.14``)
npm              an npm range (``22.x``, ``^20.10.0``, ``>=18 <21``), plus the
                 ``.nvmrc`` aliases ``lts/*``, ``lts/<codename>`` and ``node``
go               a ``toolchain`` line exactly; a ``go`` line means that version or newer
ruby             RubyGems requirements (``~> 3.3``, ``>= 3.2, < 3.4``)
===============  ==============================================================

The newest satisfying version wins, compared as versions, never as strings.
Pre-releases are only chosen when asked for by name. An app that asks for
nothing gets the newest stable version; for Node, the newest LTS line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import semantic_version  # type: ignore[import-untyped]
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from billowin.build.runtimes.requests import (
    GO_TOOLCHAIN,
    NODE_CODENAMES,
    RUBY_CONSTRAINT,
    RuntimeRequest,
    example,
    npm_spec,
)
from billowin.errors import InvalidInput


class RuntimeUnavailable(InvalidInput):
    """No runtime provider offers a version that satisfies the request."""

    def __init__(self, request: RuntimeRequest | None, offered: Iterable[str], *, language: str = "") -> None:
        self.request = request
        self.offered = sorted(set(offered), key=Version)
        language = request.language if request else language
        on_offer = _compact(self.offered, by_major=language == "node") or "nothing"
        if request is None:
            super().__init__(
                f"no runtime provider offers a stable {language} version; on offer: {on_offer}",
                hint=f"Configure a runtime provider that offers {language}.",
            )
            return
        stable = [v for v in self.offered if not Version(v).is_prerelease]
        if not stable:
            hint = f"Configure a runtime provider that offers {language}."
        elif request.source == "Gemfile.lock":
            hint = (
                f"Ask for a version on offer in Gemfile, e.g. `{example('Gemfile', stable[-1])}`, "
                "then run `bundle update --ruby` to rewrite Gemfile.lock."
            )
        else:
            file, line = request.source.split(" (")[0], example(request.source, stable[-1])
            hint = f"Change {file} to ask for a version on offer, e.g. `{line}`."
        super().__init__(
            f"{request.source} asks for {language} {request.requirement!r}, "
            f"which no runtime provider offers; on offer: {on_offer}",
            hint=hint,
        )


def satisfies(request: RuntimeRequest, version: str) -> bool:
    """Whether the offered ``version`` (a full ``X.Y.Z``) is one ``request`` accepts."""
    offered = Version(version)
    wanted = request.requirement
    if request.kind == "exact-or-prefix":
        prefix = tuple(int(part) for part in wanted.split("."))
        return not offered.is_prerelease and offered.release[: len(prefix)] == prefix
    if request.kind == "pep440":
        specifiers = SpecifierSet(wanted)  # no pre-releases unless named (packaging 26 allows them)
        return specifiers.contains(offered, prereleases=bool(specifiers.prereleases))
    if request.kind == "npm":
        if wanted == "node":
            return not offered.is_prerelease
        if wanted == "lts/*":
            return not offered.is_prerelease and offered.major % 2 == 0
        if wanted.startswith("lts/"):
            return not offered.is_prerelease and offered.major == NODE_CODENAMES[wanted[4:]]
        return bool(npm_spec(wanted).match(semantic_version.Version.coerce(version)))
    if request.kind == "go":
        if request.source == GO_TOOLCHAIN:
            return offered == Version(wanted)
        # The go line's own release, at its newest patch (as Heroku's Go buildpack reads it): a
        # newer Go would build it too, but a new minor release is the app's author's choice.
        floor = Version(wanted)
        same_release = offered.release[:2] == floor.release[:2]
        return same_release and offered >= floor and (not offered.is_prerelease or floor.is_prerelease)
    if request.kind == "ruby":
        return not offered.is_prerelease and all(_ruby_holds(part, offered) for part in wanted.split(","))
    raise ValueError(f"unknown runtime request kind {request.kind!r}")


def newest_matching(
    request: RuntimeRequest | None,
    offered: Iterable[str],
    *,
    lts: Iterable[str] = (),
    language: str = "",
) -> str | None:
    """The newest of ``offered`` that ``request`` accepts, or None.

    ``lts`` names Node's LTS lines (``"22"`` or any ``22.x.y``); without it, every even major
    counts as one. With no request, the newest stable version of ``language`` is chosen.
    """
    lts_majors = {Version(line).major for line in lts}

    def accepted(version: str) -> bool:
        parsed = Version(version)
        wants_lts = request.requirement == "lts/*" if request else language == "node"
        if wants_lts:
            lts_line = parsed.major in lts_majors if lts_majors else parsed.major % 2 == 0
            return lts_line and not parsed.is_prerelease
        return satisfies(request, version) if request else not parsed.is_prerelease

    return max(filter(accepted, offered), key=Version, default=None)


def choose(
    request: RuntimeRequest | None,
    offered: Mapping[str, list[str]],
    *,
    lts: Iterable[str] = (),
    language: str = "",
) -> tuple[str, str]:
    """``(provider, version)``: the newest version ``request`` accepts from any provider.

    ``offered`` maps provider names to their versions, in preference order; among providers
    offering the chosen version the first wins. ``language`` is only needed when ``request``
    is None (Node then gets an LTS line).
    """
    everything = [version for versions in offered.values() for version in versions]
    best = newest_matching(request, everything, lts=lts, language=language)
    if best is None:
        raise RuntimeUnavailable(request, everything, language=language)
    for provider, versions in offered.items():
        for version in versions:
            if Version(version) == Version(best):
                return provider, version
    raise AssertionError("unreachable: the best version came from some provider")


def _ruby_holds(constraint: str, offered: Version) -> bool:
    match = RUBY_CONSTRAINT.fullmatch(constraint)
    if not match:  # read_request refuses these, so only a hand-made request gets here
        raise ValueError(f"not a RubyGems requirement: {constraint!r}")
    operator, number = match.group(1) or "=", match.group(2)
    wanted = Version(number)
    if operator == "~>":  # "~> 3.3" is >= 3.3, < 4; "~> 3.3.1" is >= 3.3.1, < 3.4
        segments = [int(part) for part in number.split(".")]
        upper = segments[:-1] if len(segments) > 1 else segments
        upper[-1] += 1
        return wanted <= offered < Version(".".join(map(str, upper)))
    checks = {
        "=": offered == wanted,
        "!=": offered != wanted,
        ">": offered > wanted,
        "<": offered < wanted,
        ">=": offered >= wanted,
        "<=": offered <= wanted,
    }
    return checks[operator]


def _compact(versions: list[str], *, by_major: bool) -> str:
    """The newest version per minor line (per major for Node), oldest first: ``3.11.2, 3.13.5``."""
    newest: dict[tuple[int, ...], str] = {}
    for version in versions:  # sorted oldest first, so the last one per line is the newest
        release = Version(version).release
        newest[release[:1] if by_major else release[:2]] = version
    return ", ".join(newest.values())
