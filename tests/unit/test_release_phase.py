"""Release-phase output: every line kept in the deploy's log, the job record rewritten rarely."""

from __future__ import annotations

from billowin.release.deploy import RELEASE_PROGRESS_LINES, ReleasePhase
from billowin.release.jobspec import Process
from billowin.release.store import Release


def test_a_chatty_release_command_rewrites_the_job_a_bounded_number_of_times() -> None:
    progress: list[str] = []
    output: list[str] = []
    release = Release(app="shop", number=3, image="reg/shop:1", processes=[Process(name="web")])
    phase = ReleasePhase(release, "python3 manage.py migrate", progress.append, output.append)
    for n in range(20_000):
        phase.line(f"migration {n}")
    phase.flush(final=True)
    assert output == [f"migration {n}" for n in range(20_000)]  # the log has every line
    shown = [line for call in progress for line in call.split("\n")]
    assert len(shown) == RELEASE_PROGRESS_LINES + 1  # the first lines, then where the rest went
    assert shown[0] == "  release: migration 0"
    assert shown[-1] == f"  release: … {20_000 - RELEASE_PROGRESS_LINES} more lines in the deploy's log"
    assert len(progress) <= 3  # batched: not one job rewrite per line
