"""Prometheus metrics, kept as plain integers on the hot path.

Counting is an attribute increment; the text exposition format is built only
when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable

# Seconds from a message's arrival to its delivery write.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
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

    def render(self, gauges: dict[str, tuple[str, dict[str, float] | float]], version: str) -> str:
        """Text exposition format 0.0.4."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        label: Callable[[str, str], str] = lambda k, v: '{%s="%s"}' % (k, v)  # noqa: E731
        family("signaling_build_info", "gauge", "Version of the running server.", [(label("version", version), 1)])
        for name, (help_, value) in gauges.items():
            if isinstance(value, dict):
                key = {"signaling_connections": "transport", "signaling_redis_connections": "state"}.get(name, "kind")
                family(name, "gauge", help_, [(label(key, k), v) for k, v in sorted(value.items())])
            else:
                family(name, "gauge", help_, [("", value)])
        family("signaling_messages_relayed_total", "counter", "Messages relayed between peers, by type.",
               [(label("type", k), v) for k, v in sorted(self.relayed.items())])
        family("signaling_errors_total", "counter", "Error replies sent, by code.",
               [(label("code", k), v) for k, v in sorted(self.errors.items())])
        family("signaling_sessions_opened_total", "counter", "Sessions opened, by transport.",
               [(label("transport", k), v) for k, v in sorted(self.sessions_opened.items())])
        family("signaling_resumes_total", "counter", "Sessions resumed after a dropped connection.", [("", self.resumes)])
        family("signaling_resume_failures_total", "counter", "Resume attempts with an unknown or expired token.",
               [("", self.resume_failures)])
        name = "signaling_relay_latency_seconds"
        out.append(f"# HELP {name} Time from a message's arrival to its delivery write.")
        out.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.latency_counts):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        out.append(f"{name}_sum {self.latency_sum:.6f}")
        out.append(f"{name}_count {cumulative}")
        return "\n".join(out) + "\n"
