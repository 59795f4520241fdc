"""Prometheus metrics of one broker (a registry of its own, so that several brokers in one
process, as in tests, do not mix their numbers)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from broker.events import ChannelClosed, Event
from broker.sinks.dispatch import DataEvent


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.live_sessions = Gauge(
            "assist_live_sessions", "Sessions live on this broker", registry=r
        )
        self.tunnels = Gauge("assist_tunnels", "Helper connections (tunnels) open", registry=r)
        self.bytes_relayed = Counter(
            "assist_bytes_relayed",
            "Bytes relayed on closed channels, by direction and kind",
            ["direction", "kind"],
            registry=r,
        )
        self.codes = Counter(
            "assist_consent_codes", "Consent codes by outcome", ["outcome"], registry=r
        )
        self.auth_failures = Counter(
            "assist_auth_failures", "Failed logins, by where", ["where"], registry=r
        )
        self.audit_write = Histogram(
            "assist_audit_write_seconds",
            "Time to append one audit event (chained, in its transaction)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.connections_refused = Counter(
            "assist_connections_refused",
            "SSH connections closed before login, by reason",
            ["reason"],
            registry=r,
        )
        self.audit_alarms = Counter(
            "assist_audit_alarms",
            "Times the audit history did not verify before signing (nothing was signed)",
            registry=r,
        )
        self.checkpoint_posts = Counter(
            "assist_checkpoint_posts",
            "Checkpoint copies sent to checkpoint_post_url, by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in ("issued", "redeemed", "rejected"):
            self.codes.labels(outcome)
        for where in ("ssh", "web", "api"):
            self.auth_failures.labels(where)

    def watch(self, live: Callable[[], int], tunnels: Callable[[], int]) -> None:
        self.live_sessions.set_function(live)
        self.tunnels.set_function(tunnels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsSink:
    """Counts relayed bytes from channel-close events (optional: a failure ends nothing)."""

    name = "metrics"
    required = False
    wants_data = False

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def handle(self, event: Event) -> None:
        if isinstance(event, ChannelClosed):
            kind = event.channel.kind
            self.metrics.bytes_relayed.labels("to_customer", kind).inc(event.bytes_in)
            self.metrics.bytes_relayed.labels("to_engineer", kind).inc(event.bytes_out)

    def data(self, event: DataEvent) -> None:
        return None
