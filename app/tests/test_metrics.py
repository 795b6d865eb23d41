"""/metrics through prometheus_client: the app's families unchanged, plus process_* and python_*."""

from __future__ import annotations

import resource

from prometheus_client.parser import text_string_to_metric_families

from signaling import __version__

# Every family the app exposed before prometheus_client, with its type and labels: names, labels
# and types are an interface (dashboards, alert rules), so a change here is a documented rename.
APP_FAMILIES = {
    "signaling_build_info": ("gauge", {"version"}),
    "signaling_connections": ("gauge", {"transport"}),
    "signaling_sessions": ("gauge", set()),
    "signaling_sessions_detached": ("gauge", set()),
    "signaling_rooms": ("gauge", set()),
    "signaling_draining": ("gauge", set()),
    "signaling_messages_relayed": ("counter", {"type"}),
    "signaling_errors": ("counter", {"code"}),
    "signaling_sessions_opened": ("counter", {"transport"}),
    "signaling_resumes": ("counter", set()),
    "signaling_resume_failures": ("counter", set()),
    "signaling_relay_latency_seconds": ("histogram", {"le"}),
}


async def _families(client) -> dict:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    return {f.name: f for f in text_string_to_metric_families(await resp.text())}


async def _relay_one_offer(client, connect) -> None:
    a, b = await connect(client), await connect(client)
    await a.send(type="offer", to=b.id, data={})
    await b.expect("offer")


async def test_app_families_keep_their_names_types_and_labels(client, connect):
    await _relay_one_offer(client, connect)
    families = await _families(client)
    for name, (kind, labels) in APP_FAMILIES.items():
        assert name in families, name
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) <= labels, (name, sample)
    (info,) = families["signaling_build_info"].samples
    assert info.labels == {"version": __version__} and info.value == 1
    relayed = {s.labels["type"]: s.value for s in families["signaling_messages_relayed"].samples}
    assert relayed == {"offer": 1}


async def test_the_latency_histogram_keeps_its_buckets(client, connect):
    await _relay_one_offer(client, connect)
    text = await (await client.get("/metrics")).text()
    assert 'signaling_relay_latency_seconds_bucket{le="0.0001"}' in text
    assert 'signaling_relay_latency_seconds_bucket{le="1"}' in text
    assert 'signaling_relay_latency_seconds_bucket{le="+Inf"} 1.0' in text
    assert "signaling_relay_latency_seconds_count 1.0" in text


async def test_process_families_describe_this_process(client):
    families = await _families(client)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    (max_fds,) = families["process_max_fds"].samples
    assert max_fds.value == soft
    (open_fds,) = families["process_open_fds"].samples
    assert 0 < open_fds.value < soft
    (rss,) = families["process_resident_memory_bytes"].samples
    assert rss.value > 10 * 2**20  # a Python process with aiohttp loaded
    for name in ("process_cpu_seconds", "process_start_time_seconds", "python_info", "python_gc_collections"):
        assert name in families, name


async def test_each_app_counts_on_its_own(make_client, connect):
    first, second = await make_client(), await make_client()
    await _relay_one_offer(first, connect)
    assert (await _families(second))["signaling_messages_relayed"].samples == []
    assert len((await _families(first))["signaling_messages_relayed"].samples) == 1


def test_process_families_survive_a_hidden_proc_stat(tmp_path):
    """systemd's ProcSubset=pid (the app's unit) hides /proc/stat, where prometheus_client reads
    the boot time: the families are still there, and the start time is still this process's."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    from signaling.metrics import SandboxProcessCollector

    (tmp_path / "self").symlink_to("/proc/self")  # a /proc with this process and no stat file
    registry = CollectorRegistry()
    ProcessCollector(proc=str(tmp_path), registry=registry)
    assert registry.get_sample_value("process_max_fds") is None  # what the library alone gives

    registry = CollectorRegistry()
    SandboxProcessCollector(proc=str(tmp_path), registry=registry)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert registry.get_sample_value("process_max_fds") == soft
    assert registry.get_sample_value("process_open_fds") > 0
    expected = CollectorRegistry()  # the library, with /proc/stat
    ProcessCollector(registry=expected)
    assert abs(registry.get_sample_value("process_start_time_seconds")
               - expected.get_sample_value("process_start_time_seconds")) < 2
