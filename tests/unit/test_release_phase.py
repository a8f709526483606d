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


def test_output_without_newlines_is_cut_into_bounded_lines() -> None:
    from billowin.release.logs import MAX_LINE, split_lines

    partial = b""
    lines: list[bytes] = []
    for _ in range(64):  # 4 MiB printed without a single newline
        done, partial = split_lines(partial, b"x" * 65536)
        lines += done
        assert len(partial) <= MAX_LINE
    done, partial = split_lines(partial, b"end\nnext")
    lines += done
    assert all(len(line) <= MAX_LINE for line in lines)
    assert b"".join(lines) == b"x" * (64 * 65536) + b"end" and partial == b"next"
