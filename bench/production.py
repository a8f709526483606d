"""``power_cut_to_serving``: a production box SIGKILLed whole, started again, until every app serves.

A production box (durable state, ACLs, a Docker Engine of its own) gets the three apps of
the power-cut test. The same-run baseline is a clean restart of the same box (every process
stopped in order, then started). The figure is the seconds from the first process started
again to every app answering through the router with its own page; then the kill's own
figure, the same measure after SIGKILL of every process at once.

``python -m bench.production`` runs this figure alone.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from billowin.settings import Settings
from billowin.stack.install import base_image_tag
from billowin.stack.single_box import Ports, SingleBox
from billowin.stack.tools import Toolset
from tests.integration.production import box_bridges, new_box, populate, power_cut, tidy, wait_all_serving

console = Console(stderr=True)


def bench_power_cut(dev: SingleBox, work: Path, runs: int = 2) -> dict[str, Any]:
    """Builds images with the ``dev`` stack's engine; the production box is its own."""
    box = new_box(work / f"prod-{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    box.start()
    first_start = time.monotonic() - started
    bridges = box_bridges(box)
    try:
        world = populate(
            box, dev.settings, base_image_tag(Settings()), work / "images", f"b{uuid.uuid4().hex[:5]}"
        )
        clean, cut = [], []
        for _ in range(runs):
            box.stop()
            started = time.monotonic()
            box.start()
            wait_all_serving(world, 300)
            clean.append(round(time.monotonic() - started, 2))
            killed = power_cut(box)
            started = time.monotonic()
            box.start()
            wait_all_serving(world, 300)
            cut.append(round(time.monotonic() - started, 2))
            console.print(
                f"  power cut: {killed} processes killed; serving again in {cut[-1]}s "
                f"(clean restart {clean[-1]}s)"
            )
    finally:
        box.stop()
        tidy(box, bridges)
    return {
        "apps": len(world.apps),
        "first_start_s": round(first_start, 2),
        "clean_restart_to_serving_s": clean,
        "power_cut_to_serving_s": cut,
        "cut_over_clean": round(max(cut) / max(clean), 2),
    }


def run_alone(figure: Callable[[SingleBox, Path], dict[str, Any]]) -> int:
    """One figure on a development stack of its own (``python -m bench.<module>``)."""
    tools = Toolset.resolve(Settings())
    with tempfile.TemporaryDirectory(prefix="billowin-bench-") as tmp:
        work = Path(tmp)
        with SingleBox(tools, Ports.free(), work / "stack").running(lambda m: console.print(f"  {m}")) as dev:
            console.print(figure(dev, work))
    return 0


def main() -> int:
    return run_alone(bench_power_cut)


if __name__ == "__main__":
    sys.exit(main())
