"""Base monitoring for every app, with nothing to set up.

    HAProxy exporter + access ring ──────┐
    Nomad allocations, events, stats ─────┼─▶ Collector (thread in the API, every interval)
    Consul health checks and KV ──────────┘        │
                                                   ├─▶ MinuteAggregator ─▶ SQLite store (points, alerts)
                                                   ├─▶ alert rules ─▶ Notifier ─▶ webhook (JSON / Slack)
                                                   └─▶ /metrics (prometheus-client, per-app registry)

Files: ``router.py`` (HAProxy), ``sources.py`` (Nomad, Consul), ``aggregate.py``
(minutes, percentiles), ``store.py`` (SQLite), ``alerts.py`` (rules, de-duplication,
delivery), ``metrics.py`` (Prometheus), ``collector.py`` (the loop), ``service.py``
(``Monitoring``, what the API holds).
"""

from billowin.monitoring.service import Monitoring

__all__ = ["Monitoring"]
