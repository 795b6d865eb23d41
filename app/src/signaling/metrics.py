"""Prometheus metrics: plain integers on the hot path, prometheus_client at scrape time.

Counting stays an attribute increment (``metrics.relayed[kind] += 1``): the relay path never
calls into prometheus_client. ``/metrics`` asks a per-app ``CollectorRegistry`` (tests build
many apps in one process) holding prometheus_client's process, platform and GC collectors
(``process_*``, ``python_*``) and :class:`SignalingCollector`, which reads these counters and
the hub's gauges when scraped, the custom-collector pattern the library documents for values
kept elsewhere. Names, labels and types are those of the hand-written exposition this replaces.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

# Seconds from a message's arrival to its delivery write.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: What ``/metrics`` answers with: the text format generate_latest writes (not the library's
#: CONTENT_TYPE_LATEST, which names format 1.0.0 from prometheus_client 0.22 on).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The hub's gauges: name -> (help, value or {label value: value}).
Gauges = dict[str, tuple[str, dict[str, float] | float]]
#: The label of each labelled gauge (the others are by "kind").
GAUGE_LABELS = {"signaling_connections": "transport", "signaling_redis_connections": "state"}


class Metrics:
    """The counters the hub, the transports and the cluster backend increment."""

    def __init__(self) -> None:
        self.relayed: Counter[str] = Counter()     # by message type
        self.errors: Counter[str] = Counter()      # by error code
        self.resumes = 0
        self.resume_failures = 0
        self.sessions_opened: Counter[str] = Counter()  # by transport
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class SignalingCollector(Collector):
    """The app's own families, built from :class:`Metrics` and the hub's gauges at scrape time."""

    def __init__(self, metrics: Metrics, gauges: Callable[[], Gauges], version: str) -> None:
        self.metrics = metrics
        self.gauges = gauges
        self.version = version

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        info = GaugeMetricFamily("signaling_build_info", "Version of the running server.", labels=["version"])
        info.add_metric([self.version], 1)
        yield info
        for name, (help_, value) in self.gauges().items():
            if isinstance(value, dict):
                family = GaugeMetricFamily(name, help_, labels=[GAUGE_LABELS.get(name, "kind")])
                for key, v in sorted(value.items()):
                    family.add_metric([key], v)
                yield family
            else:
                yield GaugeMetricFamily(name, help_, value=value)
        for name, help_, label, counts in (
            ("signaling_messages_relayed_total", "Messages relayed between peers, by type.", "type", m.relayed),
            ("signaling_errors_total", "Error replies sent, by code.", "code", m.errors),
            ("signaling_sessions_opened_total", "Sessions opened, by transport.", "transport", m.sessions_opened),
        ):
            counter = CounterMetricFamily(name, help_, labels=[label])
            for key, v in sorted(counts.items()):
                counter.add_metric([key], v)
            yield counter
        yield CounterMetricFamily("signaling_resumes_total", "Sessions resumed after a dropped connection.",
                                  value=m.resumes)
        yield CounterMetricFamily("signaling_resume_failures_total",
                                  "Resume attempts with an unknown or expired token.", value=m.resume_failures)
        buckets, cumulative = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), m.latency_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        yield HistogramMetricFamily("signaling_relay_latency_seconds",
                                    "Time from a message's arrival to its delivery write.",
                                    buckets=buckets, sum_value=m.latency_sum)


class SandboxProcessCollector(ProcessCollector):
    """prometheus_client's process collector, also under systemd's ``ProcSubset=pid``.

    The library takes the boot time from ``/proc/stat`` and exports no ``process_*`` family at
    all when it cannot read it; the app's unit (roles/signaling_app) hides that file with
    ``ProcSubset=pid``. The boot time is then the wall clock less ``CLOCK_BOOTTIME``, the clock
    the kernel derives ``btime`` from. Everything else is read as the library reads it.
    """

    def _boot_time(self) -> float:
        try:
            return super()._boot_time()
        except OSError:
            return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def make_registry(metrics: Metrics, gauges: Callable[[], Gauges], version: str) -> CollectorRegistry:
    """A registry of this app's own: the app's families, process_*, python_info, python_gc_*."""
    registry = CollectorRegistry()
    SandboxProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(SignalingCollector(metrics, gauges, version))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """Text exposition format 0.0.4."""
    return generate_latest(registry)
