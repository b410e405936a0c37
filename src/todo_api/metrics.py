"""Prometheus metrics, correct across worker processes (prometheus_client's multiprocess mode).

With METRICS_ENABLED=true, `todo-api serve` hands the workers a PROMETHEUS_MULTIPROC_DIR (a fresh folder unless the
setting names one) before they start; every worker then writes its samples there and any worker can answer /metrics
for all.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, event


class Metrics:
    def __init__(self, multiproc_dir: str = "") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # The PROMETHEUS_MULTIPROC_DIR setting: where every worker's samples are ("": this process's only).
        self.multiproc_dir = multiproc_dir
        # Metric objects register in this registry for the single-process case; in multiprocess mode the
        # values go to files and /metrics aggregates them with a MultiProcessCollector.
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.logins = Counter("auth_logins_total", "Password logins", ["outcome"], registry=self.registry)
        self.reminders_sent = Counter(
            "reminders_sent_total",
            "Reminder sends by channel and outcome (sent, retry, failed, gone, refused, late)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.reminder_lag = Histogram(
            "reminder_delivery_lag_seconds",
            "From a reminder's fire_at to its delivery",
            ["channel"],
            buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 900, 3600, 86400),
            registry=self.registry,
        )
        self.pool_in_use = Gauge(
            "db_pool_connections_in_use",
            "Database connections checked out of the pool",
            multiprocess_mode="livesum",
            registry=self.registry,
        )

    def track_pool(self, engine: Engine) -> None:
        @event.listens_for(engine, "checkout")
        def _checkout(*_: Any) -> None:
            self.pool_in_use.inc()

        @event.listens_for(engine, "checkin")
        def _checkin(*_: Any) -> None:
            self.pool_in_use.dec()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

        if self.multiproc_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@lru_cache
def get_metrics() -> Metrics:
    """One set of metric objects per process (the names are process-global in multiprocess mode); the app that
    serves /metrics sets `multiproc_dir` from its settings (`main.create_app`)."""
    return Metrics()
