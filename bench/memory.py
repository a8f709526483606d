"""Memory figures on the main bench box: ``platform_idle_mb``, ``instance_overhead_mb``, ``apps_in_1gib``.

Memory is PSS, the proportional set size (``Pss:`` in ``/proc/<pid>/smaps_rollup``): a process's
private pages plus its share of every page it maps with others. A page the Nomad agent shares
with each logmon and docker_logger (the one ``nomad`` binary's text) is counted once across
them, so a sum of PSS is what those processes take together. Figures are in MiB (the names say
"mb"; 1 GiB is 1,024 of them).

- ``platform_idle_mb``: every platform process of the box with no app deployed, by component.
- ``instance_overhead_mb``: 1, then 10, then 30 small apps deployed (the busybox httpd of
  ``hello_image``, Billowin's Deployer, 50 MHz / 32 MB, one instance each, as ``router_reloads``
  deploys its apps): (platform PSS at N - platform PSS at idle) / N, by component, beside each
  app's own PSS (its container's processes; median over the apps).
- ``apps_in_1gib``: floor((1024 MiB - platform PSS at idle) / (overhead per instance + median
  app's own PSS)), from the 30-app measurement.

The platform is, found afresh from ``/proc`` at each reading:

- the box's own processes (its pidfiles: consul, nomad, the registry, consul-template, HAProxy,
  the API, dockerd when the box started it) and all their descendants: Nomad's ``logmon`` and
  ``docker_logger`` (one of each per task), HAProxy's workers, the router's reload step;
- the Docker Engine, the box's own or the system's (``/var/run/docker.pid``, else any process
  whose executable is ``dockerd``): the box uses it, so it counts; its containerd child (or a
  system ``containerd``); the ``docker-proxy`` processes publishing the box's containers' ports;
- the containerd shim of each of the box's containers (a container whose Nomad allocation is
  one of the box's Nomad's).

An app's own processes are its shim's descendants (not the shim). Shims and docker-proxies of
containers that are not the box's (another stack's) are left out, and listed as such.

``Memory`` runs the three on one box and measures once: ``apps_in_1gib`` reads what
``instance_overhead_mb`` measured (and runs it, if it has not run). Each leaves the box as it
found it: the apps destroyed, their routes and containers gone.
"""

from __future__ import annotations

import array
import contextlib
import functools
import math
import os
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from rich.console import Console

from bench.figures import api, hello_image, serves
from bench.router import one_worker, routed_hosts, router_quiet, wait
from billowin.apps.store import App
from billowin.release.jobspec import Process
from billowin.stack.process import ManagedProcess
from billowin.stack.single_box import SingleBox
from billowin.system import System

console = Console(stderr=True)
DOCKER_PIDFILE = Path("/var/run/docker.pid")
ALLOC_LABEL = "com.hashicorp.nomad.alloc_id"  # Nomad's docker driver labels every container with it
COUNTS = (1, 10, 30)
BUDGET_MIB = 1024
SETTLE_S = 5.0  # after the router is quiet: let the reload step's leftovers and the GCs finish
READINGS, READING_GAP_S = 3, 2.0  # the reading with the median platform total is kept
TARGETS = {
    "platform_idle_mb": "<= 350 MiB",
    "instance_overhead_mb": "<= 10 MiB per instance at 30 instances",
    "apps_in_1gib": ">= 30 apps",
}
# The box's process names (pidfiles) and the component each is counted as.
COMPONENT = {"nomad": "nomad agent"}


# -- the process table -------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    """One process as ``/proc`` shows it."""

    pid: int
    ppid: int
    exe: str  # the executable's file name; "" when unreadable (a kernel thread, or gone)
    argv: tuple[str, ...]

    def arg_after(self, flag: str) -> str | None:
        """The argument that follows ``flag`` in the command line, if any."""
        with contextlib.suppress(ValueError, IndexError):
            return self.argv[self.argv.index(flag) + 1]
        return None

    def short(self) -> str:
        """What the process runs, in a few words: the program's name and its first two arguments."""
        head = [Path(self.argv[0]).name, *self.argv[1:3]] if self.argv else [self.exe or "?"]
        return " ".join(head)[:60]


def process_table() -> dict[int, Proc]:
    """Every process now running, by pid."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        exe = ""
        with contextlib.suppress(OSError):
            exe = Path(os.readlink(entry / "exe")).name.removesuffix(" (deleted)")
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        words = tuple(a.decode(errors="replace") for a in argv if a)
        table[int(entry.name)] = Proc(int(entry.name), ppid, exe, words)
    return table


def children_of(table: dict[int, Proc]) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for proc in table.values():
        kids[proc.ppid].append(proc.pid)
    return kids


def descendants(kids: dict[int, list[int]], root: int) -> Iterator[int]:
    """Every process below ``root`` (not ``root`` itself), parents before their children."""
    stack = list(kids.get(root, []))
    while stack:
        pid = stack.pop()
        yield pid
        stack.extend(kids.get(pid, []))


PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT, FRAME_MASK = 1 << 63, (1 << 55) - 1  # /proc/<pid>/pagemap: bit 63 present, bits 0-54 the frame


def frames(pid: int) -> set[int]:
    """The physical page frames of a process's resident pages (``/proc/<pid>/pagemap``; root only:
    without CAP_SYS_ADMIN the kernel says 0 for each); empty when it is gone."""
    found: set[int] = set()
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                if line.endswith("[vsyscall]"):  # above the user address space: pagemap refuses it
                    continue
                start, end = (int(x, 16) for x in line.split(maxsplit=1)[0].split("-"))
                pagemap.seek(start // PAGE * 8)
                entries = array.array("Q")
                entries.frombytes(pagemap.read((end - start) // PAGE * 8))
                found.update(e & FRAME_MASK for e in entries if e & PRESENT)
    except OSError:
        return set()
    return found


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) of a process in KiB, from ``smaps_rollup``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            found[key] = int(rest.split()[0])
    return found.get("Pss", 0), found.get("Rss", 0)


# -- one reading -------------------------------------------------------------------------------
@dataclass
class Tally:
    """The PSS and RSS of some processes, and how many they are."""

    pss_kib: int = 0
    rss_kib: int = 0
    processes: int = 0

    def add(self, pid: int) -> None:
        read = memory_kib(pid)
        if read is not None:
            self.pss_kib += read[0]
            self.rss_kib += read[1]
            self.processes += 1

    @property
    def pss_mib(self) -> float:
        return self.pss_kib / 1024

    def as_dict(self) -> dict[str, Any]:
        return {
            "pss_mib": round(self.pss_kib / 1024, 1),
            "rss_mib": round(self.rss_kib / 1024, 1),
            "processes": self.processes,
        }


def total_mib(tallies: dict[str, Tally]) -> float:
    return sum(t.pss_kib for t in tallies.values()) / 1024


def breakdown(tallies: dict[str, Tally]) -> dict[str, dict[str, Any]]:
    """Each component's PSS, RSS and process count, the largest first."""
    return {name: tally.as_dict() for name, tally in sorted_tallies(tallies)}


def sorted_tallies(tallies: dict[str, Tally]) -> list[tuple[str, Tally]]:
    return sorted(tallies.items(), key=lambda kv: -kv[1].pss_kib)


@dataclass
class Container:
    """One of the box's containers: the app it runs and its addresses on Docker's networks."""

    app: str
    addresses: set[str]


@dataclass
class Census:
    """One reading of the box's memory: the platform by component, each app's own processes,
    and what was seen but is not the box's (other stacks' shims, proxies and containers)."""

    platform: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    apps: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    left_out: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    # processes outside the census running one of the platform's executables: they share its
    # text pages, and so lower its PSS (another stack's Consul halves this one's binary text)
    same_executable_elsewhere: int = 0
    # the physical pages the platform's processes map, and the apps' own processes (each once)
    platform_frames: set[int] = field(default_factory=set)
    app_frames: set[int] = field(default_factory=set)

    @property
    def platform_mib(self) -> float:
        return total_mib(self.platform)

    @property
    def platform_distinct_mib(self) -> float:
        """Every page a platform process maps counted once, whoever else maps it: what the platform
        takes on a machine of its own (PSS gives a share of a page to each process outside it)."""
        return distinct_mib(self.platform_frames)

    @property
    def all_distinct_mib(self) -> float:
        """The platform's pages and the apps' own, each counted once."""
        return distinct_mib(self.platform_frames | self.app_frames)

    def as_dict(self) -> dict[str, Any]:
        own = [t.pss_mib for t in self.apps.values()]
        return {
            "platform_pss_mib": round(self.platform_mib, 1),
            "platform_processes": sum(t.processes for t in self.platform.values()),
            "platform_distinct_pages_mib": round(self.platform_distinct_mib, 1),
            "platform_breakdown": breakdown(self.platform),
            "apps": len(self.apps),
            "app_own_pss_mib": app_summary(self.apps) if own else None,
            "left_out": breakdown(self.left_out),
            "same_executable_elsewhere": self.same_executable_elsewhere,
        }


def distinct_mib(found: set[int]) -> float:
    """MiB of these page frames; NaN when the kernel hid them (frame 0 for every page: no root)."""
    return len(found) * PAGE / 2**20 if len(found) > 1 else float("nan")


def app_summary(apps: dict[str, Tally]) -> dict[str, Any]:
    """The apps' own PSS (median, min, max) and how many processes each runs (median)."""
    own = [t.pss_mib for t in apps.values()]
    return {
        "median": round(statistics.median(own), 2),
        "min": round(min(own), 2),
        "max": round(max(own), 2),
        "processes_per_app": statistics.median(t.processes for t in apps.values()),
    }


def box_pids(box: SingleBox) -> dict[str, int]:
    """The box's own processes by name: those it started, and any other pidfile in its state."""
    found = {p.name: pid for p in box.processes if (pid := p.pid()) is not None}
    for pidfile in sorted(box.state_dir.glob("*.pid")):
        if pidfile.stem not in found:
            handle = ManagedProcess(name=pidfile.stem, argv=[], run_dir=box.state_dir, ready=lambda: True)
            if (pid := handle.pid()) is not None:
                found[pidfile.stem] = pid
    return found


def box_containers(box: SingleBox) -> dict[str, Container]:
    """The box's containers by id: those whose Nomad allocation is one of the box's Nomad's."""
    allocs = {a["ID"] for a in System(box.settings).nomad.all_allocations()}
    engine = docker.from_env()
    try:
        listed = engine.containers.list(filters={"label": ALLOC_LABEL})
        out = {}
        for c in listed:
            labels = c.attrs.get("Config", {}).get("Labels") or {}
            if labels.get(ALLOC_LABEL) not in allocs:
                continue
            networks = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            addresses = {n.get("IPAddress") for n in networks.values() if n.get("IPAddress")}
            out[c.id] = Container(labels.get("billowin.app", c.name), addresses)
        return out
    finally:
        engine.close()


def engine_pids(table: dict[int, Proc], own: int | None) -> list[int]:
    """The Docker Engine's dockerd: the box's own, else the one in ``/var/run/docker.pid``, else
    any process running ``dockerd``."""
    if own is not None:
        return [own]
    with contextlib.suppress(OSError, ValueError):
        pid = int(DOCKER_PIDFILE.read_text().strip())
        if table.get(pid, Proc(0, 0, "", ())).exe == "dockerd":
            return [pid]
    return sorted(p.pid for p in table.values() if p.exe == "dockerd")


def child_component(parent: str, proc: Proc) -> str:
    """What a descendant of one of the box's processes is counted as."""
    if parent == "nomad" and len(proc.argv) > 1 and proc.argv[1] in ("logmon", "docker_logger"):
        return f"nomad {proc.argv[1]}"
    if parent == "haproxy":
        return "haproxy"  # the master and its workers, together
    return f"{COMPONENT.get(parent, parent)} child: {proc.short()}"


def census(box: SingleBox) -> Census:
    """Read every platform process's PSS now (see the module's docstring for which they are)."""
    containers = box_containers(box)  # first: a container that starts meanwhile is left out
    table = process_table()
    kids = children_of(table)
    out = Census()
    claimed: set[int] = set()
    platform: set[int] = set()

    def claim(pid: int, into: dict[str, Tally], component: str) -> None:
        if pid not in claimed:
            claimed.add(pid)
            into[component].add(pid)
            if into is out.platform:
                platform.add(pid)
                out.platform_frames |= frames(pid)
            elif into is out.apps:
                out.app_frames |= frames(pid)

    mine = box_pids(box)
    for name, pid in mine.items():
        if name == "dockerd":
            continue  # with the Engine, below
        claim(pid, out.platform, COMPONENT.get(name, name))
        for child in descendants(kids, pid):
            claim(child, out.platform, child_component(name, table[child]))
    addresses = {a for c in containers.values() for a in c.addresses}
    for pid in engine_pids(table, mine.get("dockerd")):
        claim(pid, out.platform, "dockerd")
        for child in descendants(kids, pid):
            proc = table[child]
            if proc.exe == "docker-proxy":
                ours = proc.arg_after("-container-ip") in addresses
                claim(child, out.platform if ours else out.left_out, "docker-proxy")
            elif proc.exe == "containerd":
                claim(child, out.platform, "containerd")
            else:
                claim(child, out.platform, f"dockerd child: {proc.short()}")
    if "containerd" not in out.platform:  # the system's containerd, not dockerd's child
        for proc in table.values():
            if proc.exe == "containerd":
                claim(proc.pid, out.platform, "containerd")
    for proc in table.values():
        if not proc.exe.startswith("containerd-shim"):
            continue
        container = containers.get(proc.arg_after("-id") or "")
        if container is None:
            claim(proc.pid, out.left_out, "containerd-shim (not the box's)")
            for child in descendants(kids, proc.pid):
                claim(child, out.left_out, "containers (not the box's)")
            continue
        claim(proc.pid, out.platform, "containerd-shim")
        for child in descendants(kids, proc.pid):
            claim(child, out.apps, container.app)
    platform_exes = {table[pid].exe for pid in platform if table[pid].exe}
    # the API's interpreter runs the bench too, and everything else in Python
    platform_exes = {e for e in platform_exes if not e.startswith("python")}
    out.same_executable_elsewhere = sum(
        1 for p in table.values() if p.pid not in claimed and p.exe in platform_exes
    )
    return out


def settled(box: SingleBox) -> None:
    """Until the router is quiet, older HAProxy workers have exited, and then ``SETTLE_S``."""
    router_quiet(box)
    one_worker(box)
    time.sleep(SETTLE_S)


def reading(box: SingleBox) -> Census:
    """``READINGS`` censuses ``READING_GAP_S`` apart, on a settled box; the median platform total."""
    settled(box)
    taken = []
    for n in range(READINGS):
        if n:
            time.sleep(READING_GAP_S)
        taken.append(census(box))
    taken.sort(key=lambda c: c.platform_mib)
    return taken[len(taken) // 2]


# -- the figures -------------------------------------------------------------------------------
def per_instance(at: Census, idle: Census, count: int) -> dict[str, float]:
    """Each component's growth from idle, per instance, in MiB; the largest first."""
    names = set(at.platform) | set(idle.platform)
    growth = {
        name: (at.platform[name].pss_kib if name in at.platform else 0)
        - (idle.platform[name].pss_kib if name in idle.platform else 0)
        for name in names
    }
    ordered = sorted(growth.items(), key=lambda kv: -abs(kv[1]))
    return {name: round(kib / 1024 / count, 2) for name, kib in ordered}


NOT_COUNTED = (
    "Not counted (in no process's pages): kernel memory (page tables, sockets, cgroups), page "
    "cache of files nobody maps, tmpfs."
)
NOTE = (
    "PSS from /proc/<pid>/smaps_rollup (private pages plus a fair share of each shared page), "
    "in MiB. Platform: the box's processes from its pidfiles (consul, nomad, registry, "
    "consul-template, haproxy, api) and all their descendants (Nomad's logmon and docker_logger "
    "per task, HAProxy's workers, the reload step); the Docker Engine it uses (dockerd, counted "
    "even when it is the system's), its containerd and the docker-proxy processes of the box's "
    "containers; and the containerd shim of each of the box's containers (Nomad allocation of "
    "this box). An app's own processes: its shim's descendants. Shims, proxies and containers of "
    "other stacks are under left_out; same_executable_elsewhere counts processes outside the box "
    "running one of its executables (they share text pages with it, lowering its PSS); "
    "distinct_pages: the same processes' resident pages each counted once, whoever else maps them "
    "(physical frames from /proc/<pid>/pagemap), which other stacks on the machine do not lower. "
    + NOT_COUNTED
    + " Each reading: the router quiet for 3s, older HAProxy workers gone, 5s more, then "
    "3 readings 2s apart, the median platform total kept."
)


class Memory:
    """The three memory figures on one box, sharing one measurement."""

    def __init__(self, box: SingleBox, work: Path, counts: tuple[int, ...] = COUNTS) -> None:
        self.box, self.work, self.counts = box, work, counts
        self._overhead: dict[str, Any] | None = None
        self._overhead_error: Exception | None = None
        self._idle: Census | None = None
        self._at: dict[int, Census] = {}

    def platform_idle(self) -> dict[str, Any]:
        """``platform_idle_mb``: the platform's PSS with no app deployed, by component."""
        idle = reading(self.box)
        if idle.apps:
            raise RuntimeError(f"the box is not idle: {len(idle.apps)} apps run ({sorted(idle.apps)[:5]})")
        out = idle.as_dict()
        del out["apps"], out["app_own_pss_mib"]
        top = ", ".join(f"{n} {t.pss_mib:.0f}" for n, t in sorted_tallies(idle.platform)[:4])
        console.print(f"  platform idle: {idle.platform_mib:.1f} MiB PSS ({top})")
        return {**out, "target": TARGETS["platform_idle_mb"], "note": NOTE}

    def instance_overhead(self) -> dict[str, Any]:
        """``instance_overhead_mb``: the platform's growth per small app, at each count."""
        if self._overhead is None and self._overhead_error is None:
            try:
                self._overhead = self._measure()
            except Exception as exc:
                self._overhead_error = exc
        if self._overhead_error is not None:
            raise self._overhead_error
        assert self._overhead is not None
        return self._overhead

    def apps_in_1gib(self) -> dict[str, Any]:
        """``apps_in_1gib``: how many of the small apps fit in 1 GiB, everything counted, at the
        largest count measured."""
        if self._overhead is None:
            try:
                self.instance_overhead()
            except Exception as exc:
                raise RuntimeError(f"instance_overhead_mb failed: {exc!r}") from exc
        count = max(self._at, default=0)
        if count != max(self.counts):
            raise RuntimeError(f"instance_overhead_mb measured {count} apps, not {max(self.counts)}")
        assert self._idle is not None
        at, idle = self._at[count], self._idle
        overhead = (at.platform_mib - idle.platform_mib) / count
        own = statistics.median(t.pss_mib for t in at.apps.values())
        fits = math.floor((BUDGET_MIB - idle.platform_mib) / (overhead + own))
        alone = (at.all_distinct_mib - idle.platform_distinct_mib) / count
        fits_alone = math.floor((BUDGET_MIB - idle.platform_distinct_mib) / alone) if alone > 0 else None
        console.print(
            f"  apps in 1 GiB: {fits} = floor(({BUDGET_MIB} - {idle.platform_mib:.1f}) / "
            f"({overhead:.2f} + {own:.2f}))"
        )
        return {
            "apps": fits,
            "formula": "floor((1024 MiB - platform_idle_pss_mib) / "
            "(overhead_mib_per_instance + app_own_pss_mib_median))",
            "from_instances": count,
            "budget_mib": BUDGET_MIB,
            "platform_idle_pss_mib": round(idle.platform_mib, 1),
            "overhead_mib_per_instance": round(overhead, 2),
            "app_own_pss_mib_median": round(own, 2),
            "mib_per_app_all_counted": round(overhead + own, 2),
            "overhead_by_component_mib_per_instance": per_instance(at, idle, count),
            "platform_idle_breakdown": breakdown(idle.platform),
            "distinct_pages": {
                "apps": fits_alone,
                "formula": "floor((1024 MiB - platform_idle_distinct_mib) / "
                "((platform_and_apps_distinct_mib - platform_idle_distinct_mib) / instances))",
                "platform_idle_distinct_mib": round(idle.platform_distinct_mib, 1),
                "platform_and_apps_distinct_mib": round(at.all_distinct_mib, 1),
                "mib_per_app_all_counted": round(alone, 2),
            },
            "target": TARGETS["apps_in_1gib"],
            "note": "All from instance_overhead_mb's own idle reading (taken just before its "
            f"first deploy) and its {count}-instance reading, same run, same box. distinct_pages: "
            "the same from each process's resident pages counted once (see instance_overhead_mb's "
            "note), not lowered by other stacks sharing the binaries. " + NOT_COUNTED,
        }

    def _measure(self) -> dict[str, Any]:
        """Build the image, read the idle box, then deploy up to each count and read it again; the
        apps are destroyed whatever happens, and a failed count keeps the ones before it."""
        box = self.box
        system = System(box.settings)
        tag = uuid.uuid4().hex[:5]
        prefix = f"bm{tag}-"
        image = hello_image(box, self.work, f"bm{tag}", "v1")
        small = [Process(name="web", cpu=50, memory=32)]
        self._idle = idle = reading(box)
        if idle.apps:
            raise RuntimeError(f"the box is not idle: {len(idle.apps)} apps run")
        console.print(f"  instance overhead: idle platform {idle.platform_mib:.1f} MiB")
        apps: list[str] = []
        out: dict[str, Any] = {
            "idle": {
                "platform_pss_mib": round(idle.platform_mib, 1),
                "platform_distinct_pages_mib": round(idle.platform_distinct_mib, 1),
                "breakdown": breakdown(idle.platform),
            },
            "instances": {},
        }
        try:
            for count in self.counts:
                for n in range(len(apps) + 1, count + 1):
                    app = f"{prefix}{n:02d}"
                    system.apps.create(App(name=app, repository="/nonexistent"))
                    apps.append(app)
                    release = system.deployer.deploy(app, image, small, timeout=300)
                    if release.status.value != "live":
                        raise RuntimeError(f"{app}: {release.status.value} ({release.description})")
                    wait(functools.partial(serves, box, app, "hello"), 60, f"{app} serving")
                at = reading(box)
                if len(at.apps) != count:
                    raise RuntimeError(f"{count} apps deployed, {len(at.apps)} found running")
                self._at[count] = at
                overhead = (at.platform_mib - idle.platform_mib) / count
                figure = {
                    "overhead_mib_per_instance": round(overhead, 2),
                    "overhead_by_component_mib_per_instance": per_instance(at, idle, count),
                    "distinct_pages": {
                        "platform_mib": round(at.platform_distinct_mib, 1),
                        "overhead_mib_per_instance": round(
                            (at.platform_distinct_mib - idle.platform_distinct_mib) / count, 2
                        ),
                        "all_counted_mib_per_app": round(
                            (at.all_distinct_mib - idle.platform_distinct_mib) / count, 2
                        ),
                    },
                    **at.as_dict(),
                }
                out["instances"][str(count)] = figure
                console.print(
                    f"  instance overhead, {count} apps: {overhead:.2f} MiB per instance; "
                    f"platform {at.platform_mib:.1f} MiB; app's own {figure['app_own_pss_mib']['median']} MiB"
                )
        except Exception as exc:  # the counts measured so far are kept
            console.print(f"[red]instance overhead:[/] {exc!r}")
            out["error"] = repr(exc)
        finally:
            destroy(box, apps, prefix)
        measured = out["instances"]
        out["overhead_mib_per_instance"] = {c: f["overhead_mib_per_instance"] for c, f in measured.items()}
        out["app_own_pss_mib_median"] = {c: f["app_own_pss_mib"]["median"] for c, f in measured.items()}
        out["target"] = TARGETS["instance_overhead_mb"]
        out["note"] = (
            f"Busybox httpd apps (hello_image, one image for all; Billowin's Deployer, 50 MHz / 32 MB, "
            f"1 instance each), deployed one after another up to {', '.join(map(str, self.counts))}, "
            "each serving through the router before the reading. overhead_mib_per_instance: "
            "(platform PSS at N - platform PSS at idle) / N, the idle reading taken by this figure "
            "just before the first deploy; by component likewise (a component can shrink: the "
            "nomad agent shares its binary's text with every logmon and docker_logger, so its share "
            "falls as they come). app_own_pss_mib: each app's container processes (its shim's "
            "descendants), not counted in the platform. " + NOTE
        )
        return out


def destroy(box: SingleBox, apps: list[str], prefix: str) -> None:
    """Destroy the apps (as ``router_reloads`` does), wait until their routes and running containers
    are gone, and remove their stopped containers; what could not be undone is said, not raised."""
    if not apps:
        return
    with api(box) as client:
        failed = [a for a in apps if client.delete(f"/apps/{a}", params={"confirm": a}).status_code >= 400]
    if failed:
        console.print(f"[yellow]memory cleanup:[/] could not destroy {failed}")
    left = set(apps)

    def gone() -> bool:
        running = {c.app for c in box_containers(box).values()}
        return routed_hosts(box, prefix) == 0 and not (running & left)

    try:
        wait(gone, 300, "the apps' routes and containers to go")
    except TimeoutError as exc:
        console.print(f"[yellow]memory cleanup:[/] {exc}")
    remove_stopped(apps)


def remove_stopped(apps: list[str]) -> None:
    """Remove the apps' stopped containers (Nomad may leave them for their logs)."""
    engine = docker.from_env()
    try:
        for container in engine.containers.list(all=True, filters={"label": "billowin.app"}):
            labels = container.attrs.get("Config", {}).get("Labels") or {}
            if labels.get("billowin.app") in apps and container.status != "running":
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
    finally:
        engine.close()
