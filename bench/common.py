"""Shared pieces of the benchmarks: the servers under test, machine facts, /proc readings."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
PEERJS_BIN = BENCH / "node_modules" / "peer" / "dist" / "bin" / "peerjs.js"
RESULTS = BENCH / "results"
SERVER_CPU = 1   # both servers under test run on this core
CLIENT_CPU = 0   # the load generator runs on this one

# Ours, with the per-connection rate limit out of the way: the benchmark
# measures relaying, and PeerJS has no rate limit at all.
SIGNALING_FLAGS = ("--rate-limit", "1000000", "--rate-limit-burst", "1000000", "--log-level", "warning")


def python() -> str:
    """The interpreter that has ``signaling`` installed (the repository's venv if there is one)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_self(cpu: int = CLIENT_CPU) -> None:
    if hasattr(os, "sched_setaffinity") and cpu in range(os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def taskset(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > cpu else []


@dataclass
class Server:
    """One server under test, started pinned to ``SERVER_CPU``."""

    name: str
    port: int
    argv: list[str]
    proc: subprocess.Popen | None = None
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    nofile: int = 0   # open-files limit for the server (0: inherit this process's)

    def start(self, timeout: float = 20.0) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = WORK / f"{self.name}.log"
        WORK.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "wb")
        env = {**os.environ, **self.env}
        env.pop("AIOHTTP_NO_EXTENSIONS", None)  # the C parser and WebSocket reader must be active
        self.proc = subprocess.Popen(taskset(SERVER_CPU) + self.argv, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=ROOT, start_new_session=True, preexec_fn=self._limits)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port} within {timeout} s")

    def _limits(self) -> None:
        """In the child, before exec: the open-files limit the server needs."""
        if self.nofile:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            want = self.nofile if hard == resource.RLIM_INFINITY else min(self.nofile, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def signaling_server(port: int) -> Server:
    return Server("signaling", port, [python(), "-m", "signaling", "--host", "127.0.0.1", "--port", str(port),
                                      *SIGNALING_FLAGS])


def peerjs_server(port: int, limit: int = 100000) -> Server:
    if not PEERJS_BIN.exists():
        raise RuntimeError(f"{PEERJS_BIN} is missing: run `npm ci` in bench/ (make bench does)")
    return Server("peerjs", port, ["node", str(PEERJS_BIN), "--host", "127.0.0.1", "--port", str(port),
                                   "--concurrent_limit", str(limit)])


@dataclass(frozen=True)
class Endpoint:
    """Where the load generator connects: ``host:port``, over TLS when ``tls`` is set.
    ``server_name`` is the Host header and TLS SNI name (a proxy answers only its own)."""

    label: str
    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None
    server_name: str | None = None

    @property
    def base_url(self) -> str:
        """``scheme://host:port``: connect there, send ``host_header`` and SNI ``server_name``."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        return f"{self.server_name or self.host}:{self.port}"


class ProcessMeter:
    """CPU seconds and resident memory of one process (a server this benchmark started)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def memory_bytes(self) -> int:
        return rss_bytes(self.pid)


class ContainerMeter:
    """CPU seconds and memory of a whole container (every process of a deployed host): its
    cgroup's CPU usage and the memory charged to it, kernel socket buffers included."""

    def __init__(self, container_id: str) -> None:
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        if v2:
            base = next((p for p in (Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope"),
                                     Path(f"/sys/fs/cgroup/docker/{container_id}")) if p.exists()), None)
            self._cpu = (base / "cpu.stat", 1e-6) if base else None
            self._mem = base / "memory.current" if base else None
        else:
            self._cpu = (Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage"), 1e-9)
            self._mem = Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes")
        if self._cpu is None or not self._cpu[0].exists() or not self._mem.exists():
            raise RuntimeError(f"no cgroup found for container {container_id}")

    def cpu_seconds(self) -> float:
        path, unit = self._cpu
        text = path.read_text()
        if path.name == "cpu.stat":
            text = next(line.split()[1] for line in text.splitlines() if line.startswith("usage_usec"))
        return int(text) * unit

    def memory_bytes(self) -> int:
        return int(self._mem.read_text())


def latency_ms(seconds) -> dict[str, float]:
    """p50, p99 and max of round trips given in seconds, in milliseconds (``seconds`` not empty)."""
    ordered = sorted(seconds)
    return {"rtt_p50_ms": 1000 * ordered[len(ordered) // 2],
            "rtt_p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "rtt_max_ms": 1000 * ordered[-1]}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def loadavg() -> list[float]:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = python()
    versions = _run([py, "-c", (
        "import json, aiohttp, orjson, uvloop, importlib.metadata as m;"
        "from aiohttp import http_parser, http_websocket;"
        "print(json.dumps({'python': __import__('platform').python_version(),"
        "'signaling': m.version('signaling'), 'aiohttp': aiohttp.__version__,"
        "'orjson': orjson.__version__, 'uvloop': uvloop.__version__,"
        "'aiohttp_c_http_parser': http_parser.HttpRequestParser.__module__.endswith('_http_parser'),"
        "'aiohttp_c_ws_reader': http_websocket.WebSocketReader.__module__.endswith('reader_c')}))"
    )])
    import json

    info: dict[str, object] = {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": _os_name(),
        "node": _run(["node", "--version"]),
        "peer": _peer_version(),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "loadavg_at_start": loadavg(),
    }
    try:
        info.update(json.loads(versions))
    except ValueError:
        info["python"] = platform.python_version()
    info["bench_python"] = platform.python_version()
    return info


def _os_name() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _peer_version() -> str:
    import json

    try:
        return json.loads((BENCH / "node_modules" / "peer" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return ""


def table(rows: list[tuple[str, ...]]) -> str:
    """``rows`` (the first one the header) as left-aligned text columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows)
