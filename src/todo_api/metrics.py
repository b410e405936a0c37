"""Prometheus metrics, correct across worker processes (prometheus_client's multiprocess mode).

`todo-api serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers start when
METRICS_ENABLED=true; every worker then writes its samples there and any worker can answer /metrics for all.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, event

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@lru_cache
def get_metrics() -> Metrics:
    """One set of metric objects per process (the names are process-global in multiprocess mode)."""
    return Metrics()
