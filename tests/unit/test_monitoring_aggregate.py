"""Monitoring: from samples to one-minute points, and percentiles."""

from __future__ import annotations

import random

import pytest

from billowin.monitoring.aggregate import (
    MinuteAggregator,
    Reservoir,
    SeriesKey,
    minute_of,
    percentiles,
    stored_metrics,
)

T0 = 1_800_000_000  # a minute boundary
assert T0 % 60 == 0


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    got = percentiles(values)
    assert got["p50"] == pytest.approx(50.5)
    assert got["p95"] == pytest.approx(95.05)
    assert got["p99"] == pytest.approx(99.01)


def test_percentiles_of_one_value_and_of_none() -> None:
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert percentiles([]) == {}


def test_percentiles_see_the_slow_tail_an_average_hides() -> None:
    values = [2.0] * 980 + [900.0] * 20  # 2% of requests are very slow
    got = percentiles(values)
    assert got["p50"] == 2.0 and got["p95"] == 2.0
    assert got["p99"] == 900.0
    assert sum(values) / len(values) == pytest.approx(19.96)  # what an average would have said


def test_reservoir_keeps_a_bounded_uniform_sample() -> None:
    reservoir = Reservoir(size=1000, rng=random.Random(7))  # noqa: S311 - a seeded sample, not security
    reservoir.extend(float(v) for v in range(100_000))
    assert len(reservoir.values) == 1000 and reservoir.seen == 100_000
    # A uniform sample of 0..99999 has its median near 50000.
    assert percentiles(reservoir.values)["p50"] == pytest.approx(50_000, rel=0.1)


def test_a_minute_sums_counts_averages_rates_and_keeps_the_worst_health() -> None:
    agg = MinuteAggregator()
    requests, rps = SeriesKey("shop", "requests", "web"), SeriesKey("shop", "rps", "web")
    healthy = SeriesKey("shop", "healthy_instances", "web")
    for i, (count, up) in enumerate([(10, 2), (20, 0), (30, 2), (40, 2), (50, 2), (60, 2)]):
        at = T0 + i * 10
        agg.add(requests, at, count)
        agg.add(rps, at, count / 10)
        agg.add(healthy, at, up)
    assert agg.close(T0 + 59) == []  # the minute is not over yet
    points = {p.key.metric: (p.minute, p.value) for p in agg.close(T0 + 61)}
    assert points == {
        "requests": (T0, 210.0),
        "rps": (T0, 3.5),
        "healthy_instances": (T0, 0.0),
    }
    assert agg.close(T0 + 200) == []  # handed over once


def test_latency_points_are_percentiles_of_every_request_in_the_minute() -> None:
    agg = MinuteAggregator()
    key = SeriesKey("shop", "latency_ms", "web")
    agg.add_many(key, T0 + 5, [1.0] * 50)
    agg.add_many(key, T0 + 15, [1.0] * 49 + [500.0])  # one slow request out of 100
    points = {p.key.metric: p.value for p in agg.close(T0 + 60)}
    assert set(points) == {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}
    assert points["latency_p50_ms"] == 1.0
    assert points["latency_p99_ms"] > 1.0  # not lost, as it would be in an average of percentiles
    assert set(points) <= set(stored_metrics())


def test_distribution_metrics_refuse_plain_samples() -> None:
    with pytest.raises(ValueError):
        MinuteAggregator().add(SeriesKey("shop", "latency_ms", "web"), T0, 1.0)


def test_partial_shows_the_unfinished_minute_of_one_app() -> None:
    agg = MinuteAggregator()
    agg.add(SeriesKey("shop", "requests", "web"), T0 + 70, 5)
    agg.add(SeriesKey("blog", "requests", "web"), T0 + 70, 9)
    agg.add(SeriesKey("shop", "requests", "web"), T0 + 10, 1)  # the minute before
    (point,) = agg.partial("shop", T0 + 80)
    assert (point.key.app, point.minute, point.value) == ("shop", T0 + 60, 5.0)
    assert agg.current_percentiles(SeriesKey("shop", "latency_ms", "web"), T0 + 80) == {}


def test_minute_of() -> None:
    assert minute_of(T0 + 59.9) == T0
    assert minute_of(T0 + 60) == T0 + 60
