"""From samples taken every ``metrics_interval`` seconds to one-minute points.

Pure code, no I/O: the collector feeds it, the store keeps what it returns.

Each metric has a *kind* that says how a minute's samples become the minute's
point: counts are summed, rates and resource gauges averaged, the healthy
instance count keeps its minimum (a dip inside the minute stays visible), and
latencies are a *distribution*: the minute keeps a bounded uniform sample of
every request's latency (reservoir sampling) and its point is the true
p50/p95/p99 of that sample, never an average of per-interval percentiles.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

MINUTE = 60


class Kind(StrEnum):
    SUM = "sum"  # counts: requests, restarts...
    MEAN = "mean"  # rates and gauges: requests/s, CPU %, memory
    MIN = "min"  # healthy instances: the worst moment of the minute
    MAX = "max"  # instances
    DIST = "dist"  # latencies: percentiles of every observation


@dataclass(frozen=True)
class MetricSpec:
    kind: Kind
    unit: str
    help: str


# Every metric the collector records. Keys are what `GET /apps/{app}/metrics?metric=` takes.
METRICS: dict[str, MetricSpec] = {
    "requests": MetricSpec(Kind.SUM, "requests", "HTTP requests answered through the router"),
    "responses_4xx": MetricSpec(Kind.SUM, "responses", "4xx answers"),
    "responses_5xx": MetricSpec(Kind.SUM, "responses", "5xx answers"),
    "rps": MetricSpec(Kind.MEAN, "requests/s", "request rate"),
    "rate_4xx": MetricSpec(Kind.MEAN, "responses/s", "4xx rate"),
    "rate_5xx": MetricSpec(Kind.MEAN, "responses/s", "5xx rate"),
    "latency_ms": MetricSpec(Kind.DIST, "ms", "time to answer, request received to response sent"),
    "latency_avg_ms": MetricSpec(Kind.MEAN, "ms", "HAProxy's average over its last 1024 requests"),
    "restarts": MetricSpec(Kind.SUM, "restarts", "instances restarted in place by Nomad"),
    "crashes": MetricSpec(Kind.SUM, "exits", "instances that exited without being asked to"),
    "oom_kills": MetricSpec(Kind.SUM, "kills", "instances killed for exceeding their memory"),
    "failed_allocs": MetricSpec(Kind.SUM, "allocations", "instances Nomad gave up on (rescheduled)"),
    "instances": MetricSpec(Kind.MAX, "instances", "instances running"),
    "healthy_instances": MetricSpec(Kind.MIN, "instances", "instances passing their Consul check"),
    "cpu_percent": MetricSpec(Kind.MEAN, "% of a core", "CPU used"),
    "memory_bytes": MetricSpec(Kind.MEAN, "bytes", "memory used"),
}
PERCENTILES = {"p50": 50, "p95": 95, "p99": 99}
# The points a DIST metric becomes: latency_ms -> latency_p50_ms, latency_p95_ms, latency_p99_ms.
DERIVED = {f"latency_{name}_ms": "latency_ms" for name in PERCENTILES}


def stored_metrics() -> list[str]:
    """Every metric name a point can have (DIST metrics appear as their percentiles)."""
    plain = [name for name, spec in METRICS.items() if spec.kind != Kind.DIST]
    return sorted([*plain, *DERIVED])


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 of ``values`` (linear interpolation between closest ranks); empty for no values."""
    if not values:
        return {}
    if len(values) == 1:
        return dict.fromkeys(PERCENTILES, float(values[0]))
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {name: cuts[pct - 1] for name, pct in PERCENTILES.items()}


class Reservoir:
    """A uniform random sample of at most ``size`` values from a stream (Vitter's algorithm R).

    Bounds memory and the cost of percentiles however busy an app is; with the
    default 4096 values the p99 of a minute is within a fraction of a percentile
    rank of the exact one.
    """

    def __init__(self, size: int = 4096, rng: random.Random | None = None) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not security

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)


@dataclass(frozen=True, order=True)
class SeriesKey:
    """One series: an app's metric, per process type and per instance where the source has them."""

    app: str
    metric: str
    process: str = ""  # "" = the whole app
    instance: str = ""  # "" = every instance of the process (or of the app)


@dataclass(frozen=True)
class Point:
    key: SeriesKey
    minute: int  # unix seconds at the start of the minute
    value: float


@dataclass
class _Bucket:
    kind: Kind
    total: float = 0.0
    count: int = 0
    low: float | None = None
    high: float | None = None
    reservoir: Reservoir | None = None

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def value(self) -> float:
        if self.kind == Kind.SUM:
            return self.total
        if self.kind == Kind.MIN:
            return self.low if self.low is not None else 0.0
        if self.kind == Kind.MAX:
            return self.high if self.high is not None else 0.0
        return self.total / self.count if self.count else 0.0


def minute_of(at: float) -> int:
    return int(at // MINUTE) * MINUTE


@dataclass
class MinuteAggregator:
    """Collects samples into per-minute buckets; ``close`` hands over the finished minutes."""

    reservoir_size: int = 4096
    _buckets: dict[tuple[int, SeriesKey], _Bucket] = field(default_factory=dict)

    def add(self, key: SeriesKey, at: float, value: float) -> None:
        spec = METRICS[key.metric]
        if spec.kind == Kind.DIST:
            raise ValueError(f"{key.metric} is a distribution: use add_many")
        self._bucket(key, at, spec.kind).add(value)

    def add_many(self, key: SeriesKey, at: float, values: Iterable[float]) -> None:
        """Observations of a distribution metric (each request's latency)."""
        bucket = self._bucket(key, at, Kind.DIST)
        assert bucket.reservoir is not None
        bucket.reservoir.extend(values)

    def _bucket(self, key: SeriesKey, at: float, kind: Kind) -> _Bucket:
        slot = (minute_of(at), key)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = _Bucket(kind, reservoir=Reservoir(self.reservoir_size) if kind == Kind.DIST else None)
            self._buckets[slot] = bucket
        return bucket

    def close(self, now: float) -> list[Point]:
        """The points of every minute that ended by ``now``; their buckets are dropped."""
        current = minute_of(now)
        done = [slot for slot in self._buckets if slot[0] < current]
        points: list[Point] = []
        for slot in sorted(done):
            points.extend(_points(slot[1], slot[0], self._buckets.pop(slot)))
        return points

    def current_percentiles(self, key: SeriesKey, now: float) -> dict[str, float]:
        """p50/p95/p99 of a distribution metric in the unfinished minute so far."""
        bucket = self._buckets.get((minute_of(now), key))
        if bucket is None or bucket.reservoir is None:
            return {}
        return percentiles(bucket.reservoir.values)

    def partial(self, app: str, now: float) -> list[Point]:
        """The unfinished minute of ``app`` as points so far (what the API shows as the live minute)."""
        current = minute_of(now)
        points: list[Point] = []
        for (minute, key), bucket in sorted(self._buckets.items()):
            if minute == current and key.app == app:
                points.extend(_points(key, minute, bucket))
        return points


def _points(key: SeriesKey, minute: int, bucket: _Bucket) -> list[Point]:
    if bucket.kind != Kind.DIST:
        return [Point(key, minute, bucket.value())]
    assert bucket.reservoir is not None
    stem = key.metric.removesuffix("_ms")
    return [
        Point(SeriesKey(key.app, f"{stem}_{name}_ms", key.process, key.instance), minute, value)
        for name, value in percentiles(bucket.reservoir.values).items()
    ]
