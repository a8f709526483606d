"""The router never installs a configuration HAProxy would refuse.

These run the real ``haproxy -c`` (no network): a bad render must leave the
last good configuration live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from billowin.router.reload import MARKER, RefusedConfig, install, main
from billowin.stack.tools import system_binary

HAPROXY = str(system_binary("haproxy") or "haproxy")

GOOD = f"""{MARKER}
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend http
    bind 127.0.0.1:18080
    default_backend app_a
backend app_a
    server s1 127.0.0.1:9
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    live = tmp_path / "haproxy.cfg"
    live.write_text(GOOD)
    return tmp_path / "haproxy.cfg.next", live


def test_a_valid_render_replaces_the_live_config_and_keeps_the_last_good(files: tuple[Path, Path]) -> None:
    candidate, live = files
    new = GOOD.replace("127.0.0.1:9", "127.0.0.1:10")
    candidate.write_text(new)
    assert install(candidate, live, HAPROXY) is True
    assert live.read_text() == new
    assert live.with_name("haproxy.cfg.last-good").read_text() == GOOD


def test_an_identical_render_changes_nothing(files: tuple[Path, Path]) -> None:
    candidate, live = files
    candidate.write_text(GOOD)
    assert install(candidate, live, HAPROXY) is False


@pytest.mark.parametrize(
    "render",
    [
        "",  # consul-template rendered nothing
        "   \n",
        GOOD.replace(MARKER, "# something else"),  # not ours
        GOOD.replace("server s1 127.0.0.1:9", "server s1 not-an-address:::"),  # haproxy -c refuses
        GOOD.replace("mode http", "mode bogus"),
    ],
)
def test_an_invalid_or_empty_render_never_replaces_the_live_config(
    files: tuple[Path, Path], render: str
) -> None:
    candidate, live = files
    candidate.write_text(render)
    with pytest.raises(RefusedConfig):
        install(candidate, live, HAPROXY)
    assert live.read_text() == GOOD


def test_a_refused_render_is_logged_and_the_command_still_succeeds(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    candidate, live = files
    candidate.write_text("")
    code = main(
        [
            "--candidate",
            str(candidate),
            "--live",
            str(live),
            "--pidfile",
            str(live.parent / "none.pid"),
            "--haproxy",
            HAPROXY,
        ]
    )
    assert code == 0  # a failing command would stop consul-template, and with it the router
    assert "kept the last good configuration" in capsys.readouterr().err


TWO_APPS = GOOD + "backend app_b\n    server s2 127.0.0.1:11\n    server s3 127.0.0.1:12\n"


def test_servers_are_counted_per_app() -> None:
    from billowin.router.reload import servers_per_app

    assert servers_per_app(TWO_APPS) == {"a": 1, "b": 2}


def test_a_render_that_routes_nothing_while_nomad_runs_the_apps_is_refused(files: tuple[Path, Path]) -> None:
    """What consul-template renders while a restarted Consul is still empty."""
    candidate, live = files
    live.write_text(TWO_APPS)
    empty = TWO_APPS.replace("    server s1 127.0.0.1:9\n", "").replace(
        "    server s2 127.0.0.1:11\n    server s3 127.0.0.1:12\n", ""
    )
    candidate.write_text(empty)
    asked: list[set[str]] = []

    def still_running(apps: set[str]) -> set[str]:
        asked.append(apps)
        return apps

    with pytest.raises(RefusedConfig, match="Nomad still runs"):
        install(candidate, live, HAPROXY, still_running)
    assert asked == [{"a", "b"}]
    assert live.read_text() == TWO_APPS


def test_one_app_losing_its_servers_does_not_hold_back_the_others(files: tuple[Path, Path]) -> None:
    """A crash-looping app has no healthy instance: it is dropped, and other changes go live."""
    candidate, live = files
    live.write_text(TWO_APPS)
    candidate.write_text(GOOD.replace("127.0.0.1:9", "127.0.0.1:10"))  # b dropped, a moved
    assert install(candidate, live, HAPROXY, lambda apps: apps) is True
    assert "127.0.0.1:10" in live.read_text()


def test_a_render_that_drops_a_stopped_app_goes_through(files: tuple[Path, Path]) -> None:
    candidate, live = files
    live.write_text(TWO_APPS)
    candidate.write_text(GOOD)
    assert install(candidate, live, HAPROXY, lambda apps: set()) is True
    assert live.read_text() == GOOD


def test_when_nomad_cannot_say_the_last_good_config_stays(files: tuple[Path, Path]) -> None:
    candidate, live = files
    live.write_text(TWO_APPS)
    candidate.write_text(
        TWO_APPS.replace("    server s1 127.0.0.1:9\n", "").replace(
            "    server s2 127.0.0.1:11\n    server s3 127.0.0.1:12\n", ""
        )
    )

    def nomad_down(apps: set[str]) -> set[str]:
        raise ConnectionError("nomad unreachable")

    with pytest.raises(RefusedConfig, match="cannot confirm"):
        install(candidate, live, HAPROXY, nomad_down)
    assert live.read_text() == TWO_APPS


def test_the_stack_wires_the_guard_to_its_nomad(tmp_path: Path) -> None:
    from billowin.stack.single_box import Ports, SingleBox
    from billowin.stack.tools import Toolset

    tools = Toolset(
        *(Path(f"/bin/{n}") for n in ("nomad", "consul", "ct", "dockerd", HAPROXY, "reg", "packer", "vault"))
    )
    box = SingleBox(tools, Ports(nomad_http=14646), tmp_path)
    argv = box._reload_argv()
    assert argv[argv.index("--nomad-addr") + 1] == "http://127.0.0.1:14646"
