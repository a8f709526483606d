"""Machines on one machine: network namespaces joined by a bridge, for the cluster harness.

Each node of a test cluster (:mod:`billowin.stack.cluster`) gets a network namespace with
its own loopback and one veth into a bridge on a private /24 that exists only on this
machine. The host holds the bridge's first address, so tests reach every node; the nodes
have no default route, so nothing they run reaches beyond the bridge, and the host's
firewall forwards nothing between the bridge and any other interface. Processes enter a
node's namespace with ``nsenter --net`` (its network only: they keep the host's mounts, so
Nomad's allocation directories and Docker's bind mounts of them agree).

``Bridge.down()`` removes everything ``up()`` made (namespaces, veths, the bridge, the
firewall rules), and is safe to call after a half-done ``up()`` or twice.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from billowin.errors import ServiceError

NETNS_DIR = Path("/run/netns")
NODE_INTERFACE = "eth0"  # the node's side of its veth, inside its namespace


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise ServiceError("netns", f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)


def taken_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The IPv4 networks of the host's interfaces (a test subnet must not overlap any)."""
    out = _ip("-4", "-o", "addr", "show").stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def free_subnet(prefix: str = "10.213") -> ipaddress.IPv4Network:
    taken = taken_networks()
    start = os.getpid() % 200
    for k in [*range(start, 250), *range(0, start)]:
        net = ipaddress.IPv4Network(f"{prefix}.{k}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise ServiceError("netns", f"no free /24 under {prefix}.0.0/16")


@dataclass
class Namespace:
    """One node's network namespace and its address on the bridge."""

    name: str
    address: str
    host_veth: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def enter(self) -> list[str]:
        """The argv prefix that runs a command in this namespace (network only)."""
        return ["nsenter", f"--net={self.path}", "--"]

    def inode(self) -> int:
        return self.path.stat().st_ino

    def pids(self) -> list[int]:
        """Every process of this node: those in its namespace, and all their descendants (app
        containers have namespaces of their own, under this node's container shims)."""
        inode = self.inode()
        parents: dict[int, int] = {}
        inside: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                    inside.add(pid)
                stat = (entry / "stat").read_text()
                parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        found = set(inside)
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in found and pid not in found:
                    found.add(pid)
                    grew = True
        return sorted(found)

    def kill_all(self) -> list[int]:
        """SIGKILL every process of the node at once, as a power cut would; the pids killed."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)  # first freeze all: no parent restarts a child
            except ProcessLookupError:
                continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        return pids

    def unplug(self) -> None:
        """Take the node off the network (its cable pulled): packets to it go nowhere."""
        _ip("link", "set", self.host_veth, "down")


@dataclass
class Bridge:
    """A bridge on ``subnet`` (the host at .1) and the namespaces plugged into it."""

    name: str
    subnet: ipaddress.IPv4Network
    namespaces: list[Namespace] = field(default_factory=list)
    _rules: list[list[str]] = field(default_factory=list)

    @classmethod
    def new(cls, tag: str) -> Bridge:
        """A bridge named after ``tag`` (a few letters) on a free subnet."""
        return cls(name=f"bw{tag}", subnet=free_subnet())

    @property
    def host_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def up(self, count: int) -> list[Namespace]:
        _ip("link", "add", "name", self.name, "type", "bridge")
        _ip("addr", "add", f"{self.host_address}/{self.subnet.prefixlen}", "dev", self.name)
        _ip("link", "set", self.name, "up")
        # Between the nodes (and the host): allowed; between the bridge and anything else: not.
        # Bridged frames pass the host's FORWARD chain when br_netfilter is loaded (a Docker
        # Engine loads it and sets the chain's policy to DROP), hence the first rule.
        for rule in (
            ["FORWARD", "-i", self.name, "-o", self.name, "-j", "ACCEPT"],
            ["FORWARD", "-i", self.name, "!", "-o", self.name, "-j", "DROP"],
            ["FORWARD", "!", "-i", self.name, "-o", self.name, "-j", "DROP"],
        ):
            done = _iptables("-I", *rule[:1], "1", *rule[1:])
            if done.returncode != 0:
                raise ServiceError("netns", f"iptables refused {rule}: {done.stderr.strip()}")
            self._rules.append(rule)
        for i in range(1, count + 1):
            ns = Namespace(
                name=f"{self.name}-n{i}",
                address=str(self.subnet.network_address + 10 + i),
                host_veth=f"{self.name}v{i}",
            )
            self.namespaces.append(ns)
            _ip("netns", "add", ns.name)
            _ip("link", "add", ns.host_veth, "type", "veth", "peer", "name", f"{ns.host_veth}p")
            _ip("link", "set", f"{ns.host_veth}p", "netns", ns.name)
            _ip("link", "set", ns.host_veth, "master", self.name, "up")
            inside = ["netns", "exec", ns.name, "ip"]
            _ip(*inside, "link", "set", f"{ns.host_veth}p", "name", NODE_INTERFACE)
            _ip(*inside, "addr", "add", f"{ns.address}/{self.subnet.prefixlen}", "dev", NODE_INTERFACE)
            _ip(*inside, "link", "set", NODE_INTERFACE, "up")
            _ip(*inside, "link", "set", "lo", "up")
        return self.namespaces

    def down(self) -> None:
        """Remove the namespaces (their veths go with them), the bridge and the rules."""
        for ns in self.namespaces:
            if ns.path.exists():
                for pid in ns.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                _ip("netns", "delete", ns.name, check=False)
            _ip("link", "delete", ns.host_veth, check=False)
        self.namespaces.clear()
        _ip("link", "delete", self.name, check=False)
        for rule in self._rules:
            _iptables("-D", *rule)
        self._rules.clear()


def mounts_under(path: Path) -> list[str]:
    root = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(path: Path) -> None:
    """Unmount what a node's Nomad and Docker left mounted under ``path`` (allocations' secrets
    directories, overlay layers of killed containers)."""
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
