"""`make bench`: throughput, latency and memory of each worker against a baseline measured in the same run.

Each scenario pre-loads a backlog, starts the process under test as a real subprocess, and times its
outputs as they become visible (read_committed). Rates are taken between 10% and 90% of the expected
outputs (warm-up and tail excluded); every scenario runs BENCH_RUNS times and the median is reported
with the spread, so the machine's noise is visible. Results go to bench/results.json.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from bench import data, ingress
from bench.peers import COMMANDS as PEER_COMMANDS
from chaos.stack import publish
from services.billing.settings import BillingSettings
from services.dispatch import stagetrace
from services.dispatch.core import Channel, parse_command, render_command
from services.dispatch.http import HttpClient

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = os.environ.get("APIPLUS_KAFKA_BOOTSTRAP", "127.0.0.1:24092")
REDIS = os.environ.get("APIPLUS_REDIS_URL", "redis://127.0.0.1:24379/0")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
ONLY = {part for part in os.environ.get("BENCH_ONLY", "ingest,billing,dispatch,ingress,peers,scale").split(",") if part}
WORKERS = ("ingest", "dispatch", "billing")
SCALE_OUT = 2  # instances of each worker in the scale-out scenarios
PARTITIONS = 6
CHANNELS = 10_000
INGEST_N = int(200_000 * SCALE)
BILLING_TENANTS = int(10_000 * SCALE)
BILLING_PER_TENANT = 10
# Records per poll of billing and of its baseline: the same, so that the ratio compares per-record work on
# equal terms (a pass-through also gains from larger polls; see docs/benchmarks.md). ingest and its
# baseline both poll the processor's default of 500.
BILLING_POLL = int(os.environ.get("BENCH_BILLING_POLL", BillingSettings.model_fields["max_batch"].default))
DISPATCH_N = int(100_000 * SCALE)
CONCURRENCY = 64
LATENCY_SECONDS = 20.0
TIMEOUT = 900.0


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a worker started with APIPLUS_DISPATCH_PROCESSES=N is a supervisor
    whose children do the work)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                queue.extend(int(child) for child in task.read_text().split())
    return found


def tree_pids(procs: Sequence[subprocess.Popen[bytes]]) -> set[int]:
    """The processes and their live descendants (process_tree of each)."""
    return {pid for proc in procs for pid in process_tree(proc.pid)}


def worker_rss_mb(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    """The largest RSS of any process under test, children included: the per-worker figure of issue 14."""
    return max((rss_mb(pid) for pid in tree_pids(procs)), default=0.0)


def process_ticks(stat: Path) -> int:
    """User + system CPU of one process so far (all its threads), in clock ticks, from its /proc/<pid>/stat;
    OSError, IndexError or ValueError if it is gone or unreadable."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def cpu_seconds(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    """User + system CPU of the processes so far, their children and all their threads included
    (librdkafka's too)."""
    total = 0
    for pid in tree_pids(procs):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += process_ticks(Path(f"/proc/{pid}/stat"))
    return total / os.sysconf("SC_CLK_TCK")


class RssTrack:
    """The per-worker RSS (worker_rss_mb) sampled while a scenario runs: its peak and its course."""

    EVERY = 0.25  # seconds between samples

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.procs = procs
        self.started = time.perf_counter()
        self.last = -math.inf
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)

    def sample(self, force: bool = False) -> float:
        now = time.perf_counter()
        if force or now - self.last >= self.EVERY:
            self.last = now
            self.samples.append((round(now - self.started, 2), round(worker_rss_mb(self.procs), 1)))
        return self.samples[-1][1] if self.samples else 0.0

    @property
    def peak(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)


# Who used the machine's cores during a measurement, by role: the process(es) under test (children included),
# the broker, Redis, the provider simulator, this harness (the bench's own producers, consumers and HTTP
# client), and the rest (what no role names: the kernel's own work, py-spy, anything else running).
ROLES = ("under test", "broker", "redis", "simulator", "harness")


class MachineCpu(NamedTuple):
    busy: float  # clock ticks, all cores (machine_cpu)
    total: float
    by_pid: Mapping[int, tuple[str, int]] = {}  # pid -> (role, utime + stime ticks) for each named role's process


def role_of(pid: int, cmdline: str, under_test: Collection[int]) -> str | None:
    """A process's role in a measurement from its pid and command line (arguments joined by spaces)."""
    if pid in under_test:
        return "under test"
    if pid == os.getpid():
        return "harness"
    if "kafka.Kafka" in cmdline:
        return "broker"
    if cmdline.split(" ", 1)[0].endswith("redis-server"):
        return "redis"
    if "dispatch simulator" in cmdline:
        return "simulator"
    return None


def machine_cpu(under_test: Collection[int] = ()) -> MachineCpu:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat, in clock ticks, and each named role's
    processes' own (the pids in `under_test` are the processes under test)."""
    ticks = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    by_pid: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            role = role_of(pid, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"),
                           under_test)
            if role is not None:
                by_pid[pid] = (role, process_ticks(entry / "stat"))
        except (OSError, IndexError, ValueError):
            pass  # gone meanwhile
    return MachineCpu(sum(ticks) - idle, sum(ticks), by_pid)


def busy_pct(start: tuple[float, ...], end: tuple[float, ...]) -> float:
    """How busy all the machine's cores were between two machine_cpu() samples (100: every core)."""
    return 100 * (end[0] - start[0]) / max(end[1] - start[1], 1.0)


def machine_split(start: tuple[Any, ...], end: tuple[Any, ...]) -> dict[str, float]:
    """busy_pct between two machine_cpu() samples split by role, in the same unit (100: every core), plus
    "rest", what is left of busy_pct. A process started between the samples counts from zero; one gone by
    the second counts in "rest". Empty for samples without processes."""
    if len(start) < 3 or len(end) < 3 or not end[2]:
        return {}
    total = max(end[1] - start[1], 1.0)
    split = dict.fromkeys(ROLES, 0.0)
    for pid, (role, ticks) in end[2].items():
        before = start[2].get(pid)
        split[role] += 100 * (ticks - (before[1] if before is not None and before[0] == role else 0)) / total
    split["rest"] = max(0.0, busy_pct(start, end) - sum(split.values()))
    return split


def split_line(split: Mapping[str, float]) -> str:
    return ", ".join(f"{role} {split[role]:.0f}%" for role in (*ROLES, "rest") if role in split)


@dataclass
class Measurement:
    rate: float
    peak_rss_mb: float = 0.0
    final_rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # CPU of the process(es) under test per input between 10% and 90%: the cost that a CPU-bound
    # worker's throughput follows, less sensitive than the rate to what else the machine is doing.
    cpu_us_per_input: float = float("nan")
    rss_over_time: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB), see RssTrack
    # How busy the whole machine was meanwhile (broker, Redis, harness and anything else included):
    # near 100, the cores are the limit, not the process under test.
    machine_busy_pct: float = float("nan")
    machine_split_pct: dict[str, float] = field(default_factory=dict)  # machine_busy_pct by role (machine_split)


async def create_topics(names: Iterable[str], compacted: Iterable[str] = ()) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    compact = set(compacted)
    try:
        await admin.create_topics([
            NewTopic(n, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"} if n in compact else {})
            for n in names
        ])
    finally:
        await admin.close()


async def produce(topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    return await publish(BOOTSTRAP, topic, records, linger_ms=20, max_batch_size=256 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profiled(service: str, logs: Path) -> list[str]:
    """The interpreter, under cProfile when BENCH_PROFILE names this service (profile in .cache/bench)."""
    if service in os.environ.get("BENCH_PROFILE", "").split(","):
        return [sys.executable, "-m", "cProfile", "-o", str(logs / f"{service}.prof")]
    return [sys.executable]


def sample_stacks(name: str, proc: subprocess.Popen[bytes], out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling `proc` for the timed load when BENCH_PYSPY names `name` (raw stacks; `bench.stacktop`
    summarises them). Sampling costs the worker little CPU (py-spy reads its memory from outside)."""
    if name not in os.environ.get("BENCH_PYSPY", "").split(","):
        return None
    argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid), "--rate", "100",
            "--duration", str(math.ceil(LATENCY_SECONDS)), "--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(out.parent / f"{out.name}.log").open("ab"))


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def spawn_workers(n: int, argv: list[str], env: dict[str, str], logs: Path, name: str) -> list[subprocess.Popen[bytes]]:
    """`n` instances of one worker in the same consumer group(s); each logs to its own file."""
    return [spawn(argv, env, logs / (f"{name}.log" if n == 1 else f"{name}-{i + 1}of{n}.log")) for i in range(n)]


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_running(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"process under test {proc.args!r} exited with {proc.returncode}")


@dataclass
class Window:
    """When a count of done inputs crosses 10% and 90% of `expected`: the time then, the CPU of the processes
    under test and the machine's (snapshot() gives both)."""

    expected: int
    start: tuple[float, float, tuple[Any, ...]] | None = None  # (time, CPU seconds, machine_cpu())
    end: tuple[float, float, tuple[Any, ...]] | None = None

    def update(self, done: int, now: float, snapshot: Callable[[], tuple[float, tuple[Any, ...]]]) -> None:
        if self.start is None and done >= 0.1 * self.expected:
            self.start = (now, *snapshot())
        if self.end is None and done >= 0.9 * self.expected:
            self.end = (now, *snapshot())

    def measurement(self, inputs: int) -> Measurement:
        """Inputs per second and CPU per input between the two crossings (rate in inputs, whatever was counted)."""
        if self.start is None or self.end is None or self.end[0] <= self.start[0]:
            raise RuntimeError(f"no 10%..90% window of {self.expected} (start {self.start}, end {self.end})")
        (t10, cpu10, machine10), (t90, cpu90, machine90) = self.start, self.end
        return Measurement(rate=0.8 * inputs / (t90 - t10), cpu_us_per_input=1e6 * (cpu90 - cpu10) / (0.8 * inputs),
                           machine_busy_pct=busy_pct(machine10, machine90),
                           machine_split_pct=machine_split(machine10, machine90))


def committed_records(offsets: dict[int, list[int]], committed: dict[int, int]) -> int:
    """How many of the records seen (offsets per partition, ascending) a group's committed offsets are past.

    A committed offset is the next record to read, and a transactional topic's offsets include the commit
    markers, so the count is taken from the records' own offsets, not from a sum of committed offsets.
    """
    return sum(bisect.bisect_left(seen, committed.get(p, 0)) for p, seen in offsets.items())


async def group_committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    """The committed offset of each partition of `topic` in `group` (none yet: absent)."""
    offsets = await admin.list_consumer_group_offsets(group)
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


async def watch_outputs(
    procs: Sequence[subprocess.Popen[bytes]], topic: str, expected: int, inputs: int,
    count: Callable[[Any], int] | None = None, follower: str | None = None,
) -> Measurement:
    """Time the outputs of `procs` on `topic`; the rate is in inputs per second between 10% and 90%.

    With several instances the rate is their combined rate and CPU their sum; RSS is the largest instance's.
    `follower`: a consumer group of the same processes that reads `topic` again (ingest's health stage);
    the processes are then timed on both stages' work: an output is half done when it appears and done once
    that group has committed past it (the watch waits for all of them), and the rate and CPU are taken
    between 10% and 90% of the 2 x `expected` steps. Not between 10% and 90% of the group's commits alone:
    with a backlog the second stage starts late and ends alone, so that window would hold most of its work
    and little of the first stage's. The outputs' own figures are kept in extra["outputs"].
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False,
                                fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    await admin.start()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    seen = followed = 0
    offsets: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    outputs, steps = Window(expected), Window(2 * expected)
    rss = RssTrack(procs)
    asked = -math.inf
    deadline = time.monotonic() + TIMEOUT

    def snapshot() -> tuple[float, MachineCpu]:
        return cpu_seconds(procs), machine_cpu(tree_pids(procs))

    try:
        while (seen < expected or (follower and followed < expected)) and time.monotonic() < deadline:
            check_running(procs)
            batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
            now = time.perf_counter()
            for tp, records in batch.items():
                seen += sum(count(r) for r in records) if count else len(records)
                if follower:
                    offsets[tp.partition].extend(r.offset for r in records)
            outputs.update(seen, now, snapshot)
            if follower:
                if now - asked >= RssTrack.EVERY:
                    asked = now
                    followed = committed_records(offsets, await group_committed(admin, follower, topic))
                    now = time.perf_counter()
                steps.update(seen + followed, now, snapshot)
            rss.sample()
    finally:
        await consumer.stop()
        await admin.close()
    if seen < expected:
        raise RuntimeError(f"only {seen} of {expected} outputs on {topic}")
    if follower and followed < expected:
        raise RuntimeError(f"group {follower} committed only {followed} of {expected} outputs on {topic} "
                           f"in {TIMEOUT:.0f} s")
    final = rss.sample(force=True)
    measured = steps.measurement(inputs) if follower else outputs.measurement(inputs)
    measured.peak_rss_mb, measured.final_rss_mb, measured.rss_over_time = rss.peak, final, rss.samples
    if follower:
        measured.extra["outputs"] = outputs.measurement(inputs)
    return measured


# --- scenarios ------------------------------------------------------------------------------------
async def bench_passthrough(kind: str, source: str, n: int, logs: Path, poll: int = 500) -> Measurement:
    """A pass-through of `source`; the aiokafka baseline polls `poll` records at a time, like its worker."""
    run = uuid.uuid4().hex[:8]
    sink = f"bench.{kind}.{run}.out"
    await create_topics([sink])
    group = f"bench-{kind}-{run}"
    env: dict[str, str] = {}
    if kind == "baseline":
        argv = [sys.executable, "-m", "bench.baseline", BOOTSTRAP, source, sink, group, str(poll)]
    elif kind in PEER_COMMANDS:
        argv = [sys.executable, "-m", *PEER_COMMANDS[kind], BOOTSTRAP, source, sink, group]
    else:
        argv = [sys.executable, "-m", "bench.faust_passthrough", "worker", "-l", "warn", "--without-web"]
        env = {"BENCH_BOOTSTRAP": BOOTSTRAP, "BENCH_INPUT": source, "BENCH_OUTPUT": sink, "BENCH_GROUP": group}
    proc = spawn(argv, env, logs / f"{kind}.log")
    try:
        return await watch_outputs([proc], sink, n, n)
    finally:
        stop(proc)


def worker_env(service: str, extra: dict[str, str]) -> dict[str, str]:
    return {"APIPLUS_KAFKA_BOOTSTRAP": BOOTSTRAP, "APIPLUS_REDIS_URL": REDIS,
            f"APIPLUS_{service.upper()}_HTTP_PORT": "0", "APIPLUS_LOG_LEVEL": "WARNING", **extra}


async def bench_ingest(source: str, logs: Path, instances: int = 1) -> Measurement:
    """The whole worker: both stages' work, the health stage's as its group commits past the canonical events
    (the normalise stage's rate alone, as its events appear, is in extra["outputs"])."""
    run = uuid.uuid4().hex[:8]
    health_group = f"bench-health-{run}"
    t = {"events_topic": f"bench.ingest.{run}.events", "health_topic": f"bench.ingest.{run}.health",
         "state_topic": f"bench.ingest.{run}.state"}
    await create_topics([*t.values(), f"{source}.dlq", f"{t['events_topic']}.dlq"],
                        compacted=[t["health_topic"], t["state_topic"]])
    env = worker_env("ingest", {
        "APIPLUS_INGEST_RAW_TOPIC": source, "APIPLUS_INGEST_SUBSCRIBE_EVOLUTION": "false",
        "APIPLUS_INGEST_GROUP_ID": f"bench-ingest-{run}", "APIPLUS_INGEST_HEALTH_GROUP_ID": health_group,
        **{f"APIPLUS_INGEST_{k.upper()}": v for k, v in t.items()},
    })
    procs = spawn_workers(instances, [*profiled("ingest", logs), "-m", "services.cli", "ingest", "run"], env, logs,
                          "ingest")
    try:
        return await watch_outputs(procs, t["events_topic"], INGEST_N, INGEST_N, follower=health_group)
    finally:
        stop(*procs)


async def bench_billing(source: str, n: int, logs: Path, instances: int = 1) -> Measurement:
    run = uuid.uuid4().hex[:8]
    out, state = f"bench.billing.{run}.out", f"bench.billing.{run}.state"
    await create_topics([out, state, f"{source}.dlq"], compacted=[state])
    env = worker_env("billing", {
        "APIPLUS_BILLING_INPUT_TOPIC": source, "APIPLUS_BILLING_OUTPUT_TOPIC": out,
        "APIPLUS_BILLING_STATE_TOPIC": state, "APIPLUS_BILLING_GROUP_ID": f"bench-billing-{run}",
        "APIPLUS_BILLING_DUE_DAY_TIMER": "false", "APIPLUS_BILLING_MAX_BATCH": str(BILLING_POLL),
    })
    charges = BILLING_TENANTS * (BILLING_PER_TENANT - 2)  # the first activation of a tenant is its free channel
    procs = spawn_workers(instances, [*profiled("billing", logs), "-m", "services.cli", "billing", "run"], env, logs,
                          "billing")
    try:
        return await watch_outputs(procs, out, charges, n)
    finally:
        stop(*procs)


class Simulator:
    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.log = logs / f"simulator-{uuid.uuid4().hex[:6]}.jsonl"
        self.proc = spawn([sys.executable, "-m", "services.cli", "dispatch", "simulator", "--port", str(self.port),
                           "--log", str(self.log)], {}, logs / "simulator.out")
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    def distinct(self) -> int:
        with urllib.request.urlopen(self.url + "/_sim/stats", timeout=5) as resp:
            return int(orjson.loads(resp.read())["distinct"])

    def entries(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log.read_bytes().splitlines() if line.strip()]

    def close(self) -> None:
        stop(self.proc)


def dispatch_env(run: str, sim: Simulator) -> tuple[dict[str, str], dict[str, str]]:
    t = {"commands_topic": f"bench.dispatch.{run}.commands", "retry_topic": f"bench.dispatch.{run}.retry",
         "results_topic": f"bench.dispatch.{run}.results"}
    env = worker_env("dispatch", {
        "APIPLUS_DISPATCH_GROUP_ID": f"bench-dispatch-{run}", "APIPLUS_DISPATCH_PACING_ENABLED": "false",
        "APIPLUS_DISPATCH_SIMULATOR_URL": sim.url, "APIPLUS_DISPATCH_MAX_IN_FLIGHT": str(CONCURRENCY),
        "APIPLUS_DISPATCH_REGISTRY_TOPIC": "bench.registry", "APIPLUS_DISPATCH_HEALTH_TOPIC": "bench.health",
        **{f"APIPLUS_DISPATCH_{k.upper()}": v for k, v in t.items()},
    })
    return env, t


async def wait_sent(procs: Sequence[subprocess.Popen[bytes]], sim: Simulator, target: int) -> Measurement:
    t10 = t90 = None
    cpu10 = cpu90 = 0.0
    machine10 = machine90 = MachineCpu(0.0, 0.0)
    rss = RssTrack(procs)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        check_running(procs)
        sent = await asyncio.to_thread(sim.distinct)
        now = time.perf_counter()
        if t10 is None and sent >= 0.1 * target:
            t10, cpu10, machine10 = now, cpu_seconds(procs), machine_cpu(tree_pids(procs))
        if t90 is None and sent >= 0.9 * target:
            t90, cpu90, machine90 = now, cpu_seconds(procs), machine_cpu(tree_pids(procs))
        rss.sample()
        if sent >= target:
            break
        await asyncio.sleep(0.05)
    if t10 is None or t90 is None:
        raise RuntimeError("dispatch did not finish")
    final = rss.sample(force=True)
    return Measurement(rate=0.8 * target / (t90 - t10), peak_rss_mb=rss.peak, final_rss_mb=final,
                       cpu_us_per_input=1e6 * (cpu90 - cpu10) / (0.8 * target), rss_over_time=rss.samples,
                       machine_busy_pct=busy_pct(machine10, machine90),
                       machine_split_pct=machine_split(machine10, machine90))


async def bench_dispatch(logs: Path, instances: int = 1) -> tuple[Measurement, dict[str, Measurement]]:
    """(dispatch throughput, HTTP ceilings on the worker's client and on aiohttp's) on the same simulator with the
    same rendered requests.

    The ceilings by scenario name (`http`, `http_aiohttp`); with several instances only their combined
    throughput is measured, and no ceiling (the single run's are the ones).
    """
    sim = Simulator(logs)
    try:
        run = uuid.uuid4().hex[:8]
        env, t = dispatch_env(run, sim)
        await create_topics([*t.values(), f"{t['commands_topic']}.dlq"])
        commands = [data.dispatch_command(run, i, CHANNELS) for i in range(DISPATCH_N)]
        await produce(t["commands_topic"], ((k, orjson.dumps(c)) for k, c in commands))
        procs = spawn_workers(instances, [*profiled("dispatch", logs), "-m", "services.cli", "dispatch", "run"], env,
                              logs, "dispatch")
        try:
            worker = await wait_sent(procs, sim, DISPATCH_N)
        finally:
            stop(*procs)
        ceilings = ({name: await http_ceiling(sim, commands, f"http-{run}", client)
                     for name, client in (("http", "apiplus"), ("http_aiohttp", "aiohttp"))}
                    if instances == 1 else {})
    finally:
        sim.close()
    return worker, ceilings


async def http_ceiling(sim: Simulator, commands: list[tuple[bytes, dict[str, Any]]], prefix: str,
                       client: str = "apiplus") -> Measurement:
    """A bare loop posting the same rendered requests with the same concurrency, on the worker's own HTTP client
    (`services/dispatch/http.py`; the ceiling the worker is judged against) or on aiohttp's (`client="aiohttp"`,
    what the worker used until issue 14's fifth round)."""
    requests = []
    for i, (_, raw) in enumerate(commands):
        command = parse_command(raw)
        channel = Channel(command.channel_id, "bench", "", "simulator", "plus", "active")
        requests.append((f"{prefix}-{client}-{i}", render_command(command, channel)))
    done = 0
    t10 = t90 = None
    machine10 = machine90 = MachineCpu(0.0, 0.0)
    n = len(requests)
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def loop(post: Callable[[str, bytes, dict[str, str]], Awaitable[None]]) -> None:
        nonlocal done, t10, t90, machine10, machine90
        while not queue.empty():
            key, request = queue.get_nowait()
            headers = {"Content-Type": "application/json", "Idempotency-Key": key, "token": "bench"}
            await post(request.path, orjson.dumps(request.body), headers)
            done += 1
            if t10 is None and done >= 0.1 * n:
                t10, machine10 = time.perf_counter(), machine_cpu()
            if t90 is None and done >= 0.9 * n:
                t90, machine90 = time.perf_counter(), machine_cpu()

    if client == "aiohttp":
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
            async def post_aiohttp(path: str, body: bytes, headers: dict[str, str]) -> None:
                async with session.post(sim.url + path, data=body, headers=headers) as r:
                    await r.read()

            await asyncio.gather(*(loop(post_aiohttp) for _ in range(CONCURRENCY)))
    else:
        http = HttpClient(timeout_seconds=TIMEOUT, max_connections=CONCURRENCY)

        async def post(path: str, body: bytes, headers: dict[str, str]) -> None:
            await http.request("POST", sim.url, path, body, headers)

        try:
            await asyncio.gather(*(loop(post) for _ in range(CONCURRENCY)))
        finally:
            await http.close()
    assert t10 is not None and t90 is not None
    return Measurement(rate=0.8 * n / (t90 - t10), machine_busy_pct=busy_pct(machine10, machine90),
                       machine_split_pct=machine_split(machine10, machine90))


async def bench_latency(rate: float, logs: Path) -> dict[str, Any]:
    """End-to-end latency (command produced -> simulator received) at `rate` commands/s.

    The timed load starts once the worker has sent a first command (tables loaded, group joined,
    producers fenced): start-up is not latency at a load. The time it took is reported beside the
    percentiles (`ready_s`), and the latencies per second of the run are written to the logs.
    A plain consumer of the commands topic in the harness splits the path: `broker_*` is produced →
    readable by a consumer (the bench producer and the broker), `worker_*` is readable → received by
    the simulator (the worker's own fetch, work and request). Percentiles of the parts do not add up.
    """
    sim = Simulator(logs)
    run = uuid.uuid4().hex[:8]
    env, t = dispatch_env(run, sim)
    metrics_url = f"http://127.0.0.1:{(port := free_port())}/metrics"
    env["APIPLUS_DISPATCH_HTTP_PORT"] = str(port)
    stages_path = logs / f"dispatch-stages-{run}.tsv"
    env[stagetrace.ENV] = str(stages_path)
    await create_topics([*t.values(), f"{t['commands_topic']}.dlq"])
    fetches_path = logs / f"dispatch-fetches-{run}.tsv"
    traced = ["bench.fetchtrace", str(fetches_path)] if os.environ.get("BENCH_FETCH_TRACE") else []
    spawned = time.monotonic()
    proc = spawn([sys.executable, "-m", *traced, "services.cli", "dispatch", "run"], env, logs / "dispatch-latency.log")
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=0, enable_idempotence=True)
    await producer.start()
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    watcher: asyncio.Task[None] | None = None
    try:
        watcher = asyncio.create_task(watch_commands(t["commands_topic"], seen_at))  # started before it is timed
        await producer.send_and_wait(t["commands_topic"], orjson.dumps(data.dispatch_command(run, -1, CHANNELS)[1]),
                                     key=b"ch0")
        deadline = time.monotonic() + 120
        while await asyncio.to_thread(sim.distinct) < 1:
            check_running([proc])
            if time.monotonic() > deadline:
                raise RuntimeError("the latency phase's worker sent nothing in 120 s")
            await asyncio.sleep(0.1)
        ready = time.monotonic() - spawned
        loop_start = await asyncio.to_thread(loop_figures, metrics_url)
        sampler = sample_stacks("dispatch-latency", proc, logs / f"dispatch-latency-{run}.pyspy")
        cpu_start, machine_start = cpu_seconds([proc]), machine_cpu(tree_pids([proc]))
        timed_from = time.time()
        total = int(rate * LATENCY_SECONDS)
        started = time.perf_counter()
        tick = 0.01
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > tick:
                await asyncio.sleep(delay)
            key, command = data.dispatch_command(run, i, CHANNELS)
            await producer.send(t["commands_topic"], orjson.dumps(command), key=key)
            sent_at[str(command["command_id"])] = time.time()
        await producer.flush()
        timed_to = time.time()
        deadline = time.monotonic() + 120
        while await asyncio.to_thread(sim.distinct) < total + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        cpu_us = 1e6 * (cpu_seconds([proc]) - cpu_start) / total
        machine = machine_split(machine_start, machine_cpu(tree_pids([proc])))
        if sampler is not None:
            sampler.wait(60)
        loop = {k: v - loop_start.get(k, 0.0) for k, v in (await asyncio.to_thread(loop_figures, metrics_url)).items()}
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await producer.stop()
        stop(proc)
        sim.close()
    entries = [e for e in sim.entries() if e["idempotency_key"] in sent_at]
    timed = sorted((sent_at[e["idempotency_key"]], (e["ts"] - sent_at[e["idempotency_key"]]) * 1000) for e in entries)
    broker = [(seen_at[c] - sent_at[c]) * 1000 for c in sent_at if c in seen_at]
    worker = [(e["ts"] - seen_at[e["idempotency_key"]]) * 1000 for e in entries if e["idempotency_key"] in seen_at]
    if len(timed) < 0.99 * len(sent_at):
        raise RuntimeError(f"only {len(timed)} of {len(sent_at)} commands reached the simulator")
    first = timed[0][0]
    per_second = by_second(first, timed)
    # the bench producer and the broker alone, per second of the run
    readable = by_second(first, ((at, (seen_at[c] - at) * 1000) for c, at in sent_at.items() if c in seen_at))
    timeline = [{"second": s, "commands": len(v), **percentiles(v),
                 **{f"readable_{k}": x for k, x in (percentiles(readable[s]) if s in readable else {}).items()}}
                for s, v in sorted(per_second.items())]
    (logs / f"dispatch-latency-{run}.json").write_bytes(orjson.dumps(timeline, option=orjson.OPT_INDENT_2))
    split = {f"{part}_{k}": v for part, values in (("broker", broker), ("worker", worker)) if values
             for k, v in percentiles(values).items()}
    received = {e["idempotency_key"]: e["ts"] for e in entries}
    stages = stage_split(stages_path.read_text() if stages_path.exists() else "", received)
    return {**percentiles([ms for _, ms in timed]), **split, "rate": rate, "commands": len(timed),
            "ready_s": round(ready, 1), "cpu_us_per_command": cpu_us, "loop": loop, "stages": stages,
            "machine_split_pct": machine,
            "fetch_cycle": fetch_cycle(fetches_path.read_text(), t["commands_topic"], timed_from, timed_to)
            if fetches_path.exists() else {}}


def by_second(first: float, timed: Iterable[tuple[float, float]]) -> dict[int, list[float]]:
    """(send time, ms) pairs grouped by the second of the run they were sent in."""
    grouped: dict[int, list[float]] = {}
    for at, ms in timed:
        grouped.setdefault(int(at - first), []).append(ms)
    return grouped


STAGE_PARTS = ("produced -> intake", "intake -> lane", "lane -> claimed", "claimed -> request", "request -> received")


INTAKE_PAUSE_SECONDS = 0.02  # stage_split: no command taken in for this long is a pause of intake
AFTER_PAUSE_SECONDS = 0.005  # ... and a command taken in within this of a pause's end was held up by it


def stage_split(trace: str, received: dict[str, float]) -> dict[str, Any]:
    """The worker's stage trace (services/dispatch/stagetrace.py) joined with the simulator's receipt times:
    each part's p50 and p99 over all commands, and its mean over the slowest 1% end to end (where their
    time went). Parts in ms; `produced -> intake` includes the bench producer, the broker and the worker's
    fetch. Also the pauses of intake (no command taken in for over 20 ms, while commands kept arriving at
    the harness's steady rate) and the share of the slowest 1% taken in within 5 ms of a pause's end."""
    rows, intakes = [], []
    for line in trace.splitlines():
        command_id, *times = line.split("\t")
        if command_id in received:
            marks = [*map(float, times), received[command_id]]
            rows.append([1000 * (b - a) for a, b in itertools.pairwise(marks)])
            intakes.append(marks[1])
    if not rows:
        return {}
    totals = sorted(range(len(rows)), key=lambda i: sum(rows[i]))
    slowest = totals[-max(1, len(rows) // 100):]
    parts = {}
    for k, part in enumerate(STAGE_PARTS):
        spread = percentiles([r[k] for r in rows])
        parts[part] = {"p50_ms": spread["p50_ms"], "p99_ms": spread["p99_ms"],
                       "slowest_1pct_mean_ms": statistics.fmean(rows[i][k] for i in slowest)}
    ordered = sorted(intakes)
    gaps = [(b - a, b) for a, b in itertools.pairwise(ordered) if b - a > INTAKE_PAUSE_SECONDS]
    ends = [end for _, end in gaps]

    def after_pause(at: float) -> bool:
        k = bisect.bisect_right(ends, at) - 1
        return k >= 0 and at - ends[k] <= AFTER_PAUSE_SECONDS

    return {"commands": len(rows), "parts": parts,
            "intake_pauses": {"count": len(gaps), "longest_ms": 1000 * max((g for g, _ in gaps), default=0.0),
                              "slowest_1pct_after_one_pct": 100 * sum(after_pause(intakes[i]) for i in slowest)
                              / len(slowest)}}


def fetch_cycle(trace: str, topic: str, start: float, end: float) -> dict[str, float]:
    """The fetch trace (BENCH_FETCH_TRACE, bench/fetchtrace.py: topic, sent, handed over per line) read for the
    fetches of `topic` sent between `start` and `end`: how long each took (`fetch_*`) and the gap from its end
    to the next one's start (`gap_*`), in ms. Empty without two such fetches."""
    rows = (line.split("\t") for line in trace.splitlines())
    fetches = sorted((float(fields[1]), float(fields[2])) for fields in rows
                     if len(fields) == 3 and fields[0] == topic and start <= float(fields[1]) <= end)
    if len(fetches) < 2:
        return {}
    took = percentiles([1000 * (done - sent) for sent, done in fetches])
    gaps = percentiles([1000 * (b[0] - a[1]) for a, b in itertools.pairwise(fetches)])
    return {"fetches": len(fetches), **{f"fetch_{k}": v for k, v in took.items()},
            **{f"gap_{k}": v for k, v in gaps.items()}}


def fetch_line(fetches: dict[str, float]) -> str:
    """The worker's fetch cycle (BENCH_FETCH_TRACE, bench/fetchtrace.py), or nothing when not traced."""
    if not fetches:
        return ""
    return (f"; {fetches['fetches']:.0f} fetches of commands, each p50/p99 {fetches['fetch_p50_ms']:.1f}/"
            f"{fetches['fetch_p99_ms']:.1f} ms, then p50/p99 {fetches['gap_p50_ms']:.1f}/"
            f"{fetches['gap_p99_ms']:.1f} ms until the next was sent")


def stage_line(stages: dict[str, Any]) -> str:
    if not stages:
        return "stage trace not read"
    line = "slowest 1% by stage (mean ms): " + ", ".join(
        f"{part} {p['slowest_1pct_mean_ms']:.1f}" for part, p in stages["parts"].items())
    pauses = stages.get("intake_pauses")
    if pauses:
        line += (f"; intake paused over {1000 * INTAKE_PAUSE_SECONDS:.0f} ms {pauses['count']} times (longest "
                 f"{pauses['longest_ms']:.0f} ms), {pauses['slowest_1pct_after_one_pct']:.0f}% of the slowest 1% "
                 f"taken in within {1000 * AFTER_PAUSE_SECONDS:.0f} ms of one's end")
    return line


PROBE_BOUNDS = {"0.001": 1, "0.005": 5, "0.01": 10, "0.05": 50}  # histogram bucket (s) -> figure name (ms)


def diagnosis_line(run: dict[str, Any]) -> str:
    """What a latency run says held its commands up: loop probe, stage split, cores by role, fetch cycle."""
    return (f"{loop_line(run.get('loop', {}))}; {stage_line(run.get('stages', {}))}; "
            f"machine: {split_line(run.get('machine_split_pct', {}))}{fetch_line(run.get('fetch_cycle', {}))}")


def loop_figures(metrics_url: str) -> dict[str, float]:
    """The worker's event loop probe (apiplus/loopprobe.py), as counters to subtract: stalled seconds running
    and waiting for a CPU, probes over 50 ms late, collector pauses (count and seconds) per generation."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        return parse_loop_figures(resp.read().decode())


def parse_loop_figures(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apiplus_event_loop_stalled_seconds_total":
                out[f"stalled_{sample.labels['cpu']}_s"] = sample.value
            elif sample.name == "apiplus_event_loop_lag_seconds_count":
                out["probes"] = sample.value
            elif sample.name == "apiplus_event_loop_lag_seconds_bucket" and sample.labels["le"] in PROBE_BOUNDS:
                out[f"probes_within_{PROBE_BOUNDS[sample.labels['le']]}ms"] = sample.value
            elif sample.name in ("apiplus_gc_pause_seconds_count", "apiplus_gc_pause_seconds_sum"):
                kind = "count" if sample.name.endswith("count") else "s"
                out[f"gc{sample.labels['generation']}_{kind}"] = sample.value
    return out


def loop_line(loop: dict[str, float]) -> str:
    """What held the worker's event loop up during the timed load."""
    if not loop:
        return "loop probe not read"
    late = loop.get("probes", 0) - loop.get("probes_within_50ms", 0)
    gc = ", ".join(f"gen{g} {loop.get(f'gc{g}_count', 0):.0f} pauses {1000 * loop.get(f'gc{g}_s', 0):.0f} ms"
                   for g in (0, 1, 2))
    probes = loop.get("probes", 0)
    timely = ("/".join(f"{100 * loop.get(f'probes_within_{ms}ms', 0) / probes:.0f}%" for ms in (1, 5, 10))
              if probes else "-")
    return (f"event loop stalled {1000 * loop.get('stalled_running_s', 0):.0f} ms running, "
            f"{1000 * loop.get('stalled_waiting_s', 0):.0f} ms waiting for a CPU, {late:.0f} probes over 50 ms late, "
            f"{timely} of its probes within 1/5/10 ms; gc {gc}")


async def watch_commands(topic: str, seen_at: dict[str, float]) -> None:
    """When each command becomes readable: a plain consumer from the start of the topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    seen_at.setdefault(str(orjson.loads(record.value)["command_id"]), now)
    finally:
        await consumer.stop()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    return {"p50_ms": ordered[n // 2], "p99_ms": ordered[max(0, int(n * 0.99) - 1)],
            "p999_ms": ordered[max(0, int(n * 0.999) - 1)], "max_ms": ordered[-1]}


def latency_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each run's figures, the median p50 and the worst p99 / p99.9: the target holds only if it holds in every run."""
    if not runs:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "p999_ms": float("nan"), "runs": []}
    return {"p50_ms": statistics.median(r["p50_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs),
            "p999_ms": max(r["p999_ms"] for r in runs), "rate": runs[0]["rate"], "runs": runs}


# --- the run ----------------------------------------------------------------------------------------
# Transactional consume-produce passes each input goes through (ingest: normalise, then health). When
# ingest does both in one pass for keyed records, set its count to 1.
TRANSACTIONAL_STAGES = {"ingest": 2, "billing": 1}


def client_projection(cpu: dict[str, float]) -> dict[str, float]:
    """What ingest and billing would gain if their Kafka work cost what it costs on confluent-kafka's asyncio API.

    A worker is CPU-bound, so its rate follows its CPU per input. Each transactional stage pays about
    what the exactly-once pass-through pays on the same client (ingest has two stages, billing one); the
    projection swaps the aiokafka pass-through's CPU for the confluent-aio one's and keeps the rest.
    """
    if not {"aiokafka_eos", "confluent_aio_eos"} <= set(cpu):
        return {}
    saved = cpu["aiokafka_eos"] - cpu["confluent_aio_eos"]
    return {f"{worker}_gain": cpu[worker] / max(cpu[worker] - stages * saved, 1e-9)
            for worker, stages in TRANSACTIONAL_STAGES.items() if worker in cpu}


def course(samples: Sequence[tuple[float, float]], points: int = 12) -> str:
    """A few (seconds, MB) samples spread over the run, for the printed summary."""
    if not samples:
        return "-"
    step = max(1, math.ceil(len(samples) / points))
    picked = [*samples[::step], *([samples[-1]] if (len(samples) - 1) % step else [])]
    return " ".join(f"{t:.0f}s:{mb:.0f}" for t, mb in picked) + " MB"


def summary(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread_pct": 100 * (max(values) - min(values)) / med if med else 0.0, "runs": len(values)}


def record_ingest(results: dict[str, list[Measurement]], suffix: str, whole: Measurement) -> None:
    """The whole worker's figures as "ingest", its normalise stage's alone as "ingest_normalise"."""
    results[f"ingest{suffix}"].append(whole)
    results[f"ingest_normalise{suffix}"].append(whole.extra["outputs"])


async def load_registry() -> None:
    """dispatch's channel registry (and its empty health topic) for the bench's channels; kept across runs on one
    broker, so an existing topic is fine."""
    with contextlib.suppress(Exception):
        await create_topics(["bench.registry", "bench.health"], compacted=["bench.registry", "bench.health"])
    await produce("bench.registry", data.registry_rows(CHANNELS))


async def main() -> int:
    logs = ROOT / ".cache" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    ingest_src, billing_src = f"bench.ingest.{tag}.raw", f"bench.billing.{tag}.lifecycle"
    await create_topics([ingest_src, billing_src])
    say(f"loading backlogs: {INGEST_N} raw events, {BILLING_TENANTS * BILLING_PER_TENANT} lifecycle events, "
        f"{CHANNELS} channels in the registry")
    await produce(ingest_src, data.ingest_events(INGEST_N, CHANNELS))
    billing_n = await produce(billing_src, data.billing_events(BILLING_TENANTS, BILLING_PER_TENANT))
    await load_registry()
    results: dict[str, list[Measurement]] = {k: [] for k in (
        "baseline_ingest", "ingest", "ingest_normalise", "faust_ingest", *PEER_COMMANDS, "baseline_billing",
        "billing", "dispatch", "http", "http_aiohttp",
        *(f"{s}_x{SCALE_OUT}" for s in ("ingest", "ingest_normalise", "billing", "dispatch")))}
    for r in range(RUNS):
        say(f"run {r + 1}/{RUNS}")
        if "ingest" in ONLY:
            results["baseline_ingest"].append(await bench_passthrough("baseline", ingest_src, INGEST_N, logs))
            record_ingest(results, "", await bench_ingest(ingest_src, logs))
            results["faust_ingest"].append(await bench_passthrough("faust", ingest_src, INGEST_N, logs))
            for peer in PEER_COMMANDS if "peers" in ONLY else ():
                results[peer].append(await bench_passthrough(peer, ingest_src, INGEST_N, logs))
            if "scale" in ONLY:
                record_ingest(results, f"_x{SCALE_OUT}", await bench_ingest(ingest_src, logs, SCALE_OUT))
        if "billing" in ONLY:
            results["baseline_billing"].append(
                await bench_passthrough("baseline", billing_src, billing_n, logs, poll=BILLING_POLL))
            results["billing"].append(await bench_billing(billing_src, billing_n, logs))
            if "scale" in ONLY:
                results[f"billing_x{SCALE_OUT}"].append(await bench_billing(billing_src, billing_n, logs, SCALE_OUT))
        if "dispatch" in ONLY:
            worker, ceilings = await bench_dispatch(logs)
            results["dispatch"].append(worker)
            for name, ceiling in ceilings.items():  # a single instance also measures the ceilings
                results[name].append(ceiling)
            if "scale" in ONLY:
                results[f"dispatch_x{SCALE_OUT}"].append((await bench_dispatch(logs, SCALE_OUT))[0])
        say("  " + ", ".join(f"{k} {v[-1].rate:,.0f}/s" for k, v in results.items() if v))
    rates = {k: summary([m.rate for m in v]) for k, v in results.items() if v}
    cpu_summary = {k: summary([m.cpu_us_per_input for m in v]) for k, v in results.items() if v}
    cpu = {k: c["median"] for k, c in cpu_summary.items()}
    machine = {k: statistics.median(m.machine_busy_pct for m in v) for k, v in results.items() if v}
    split = {k: {role: statistics.median(m.machine_split_pct.get(role, 0.0) for m in v)
                 for role in (*ROLES, "rest")} for k, v in results.items() if v and v[0].machine_split_pct}
    latency_runs: list[dict[str, Any]] = []
    if "dispatch" in rates:
        half = rates["dispatch"]["median"] / 2
        for run in range(RUNS):
            say(f"latency at half the dispatch maximum ({half:,.0f} commands/s), run {run + 1}/{RUNS}")
            latency_runs.append(await bench_latency(half, logs))
    latency = latency_summary(latency_runs)
    # Per worker process (children of APIPLUS_DISPATCH_PROCESSES included, each on its own); "holding 10k":
    # once every output is out, the worker still holding its 10 000 channels' (tenants') state.
    rss: dict[str, dict[str, Any]] = {
        name: {"peak_mb": max(m.peak_rss_mb for m in results[name]),
               "holding_10k_mb": statistics.median(m.final_rss_mb for m in results[name]),
               "over_time_first_run": results[name][0].rss_over_time}
        for name in (*WORKERS, *(f"{s}_x{SCALE_OUT}" for s in WORKERS)) if results[name]}
    pairs_main = ("ingest_vs_baseline", "billing_vs_baseline", "dispatch_vs_http")
    pairs = {"ingest_vs_baseline": ("ingest", "baseline_ingest"),
             "ingest_normalise_vs_baseline": ("ingest_normalise", "baseline_ingest"),
             "faust_vs_baseline": ("faust_ingest", "baseline_ingest"),
             "billing_vs_baseline": ("billing", "baseline_billing"), "dispatch_vs_http": ("dispatch", "http"),
             "dispatch_vs_http_aiohttp": ("dispatch", "http_aiohttp"),
             **{f"{peer}_vs_baseline": (peer, "baseline_ingest") for peer in PEER_COMMANDS},
             "quix_ingest_vs_ingest": ("quix_ingest", "ingest"),
             "confluent_aio_eos_vs_aiokafka_eos": ("confluent_aio_eos", "aiokafka_eos"),
             "confluent_sync_eos_vs_aiokafka_eos": ("confluent_sync_eos", "aiokafka_eos"),
             **{f"{s}_x{SCALE_OUT}_vs_one": (f"{s}_x{SCALE_OUT}", s) for s in ("ingest", "billing", "dispatch")}}
    nan = float("nan")
    ratios = {name: rates[a]["median"] / rates[b]["median"] if a in rates and b in rates else nan
              for name, (a, b) in pairs.items()}
    projection = client_projection(cpu)
    report = {"scale": SCALE, "runs": RUNS, "sizes": {"ingest": INGEST_N, "billing": billing_n, "dispatch": DISPATCH_N,
                                                      "channels": CHANNELS},
              "poll_records": {"baseline_ingest": 500, "ingest": 500, "baseline_billing": BILLING_POLL,
                               "billing": BILLING_POLL},
              "rates_per_second": rates, "cpu_us_per_input": cpu_summary,
              "machine_busy_pct": machine, "machine_split_pct": split, "ratios": ratios,
              "client_projection": projection, "latency_at_half_load": latency, "rss_mb": rss,
              "targets": {"ingest_vs_baseline": 0.5, "billing_vs_baseline": 0.5, "dispatch_vs_http": 0.7,
                          "p99_ms": 50, "rss_mb": 200}}
    report["ingress"] = await ingress.bench(BOOTSTRAP, logs, SCALE, RUNS) if "ingress" in ONLY else None
    (ROOT / "bench" / "results.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print()
    print(f"{'scenario':<20}{'median/s':>12}{'min/s':>12}{'max/s':>12}{'spread':>9}{'cpu us/input':>14}"
          f"{'machine busy':>14}")
    for name, s in rates.items():
        print(f"{name:<20}{s['median']:>12,.0f}{s['min']:>12,.0f}{s['max']:>12,.0f}{s['spread_pct']:>8.0f}%"
              f"{cpu[name]:>14,.0f}{machine[name]:>13.0f}%")
    print()
    print("where the cores went (medians, % of all cores, as 'machine busy'):")
    for name, roles in split.items():
        print(f"  {name:<20} {machine[name]:>3.0f}% busy: {split_line(roles)}")
    print()
    for name, value in ratios.items():
        if not math.isnan(value) or name in pairs_main:  # a scenario BENCH_ONLY left out gives nan
            print(f"{name:<36}{value:>6.2f}x")
    for name, gain in projection.items():
        print(f"projected {name.removesuffix('_gain')} gain on confluent-kafka's asyncio API: {gain:.2f}x")
    for i, r in enumerate(latency["runs"], 1):
        print(f"dispatch latency at half load ({r['rate']:,.0f}/s), run {i}: p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, p99.9 {r['p999_ms']:.1f} ms, max {r['max_ms']:.1f} ms "
              f"(worker ready after {r['ready_s']:.1f} s, {r['cpu_us_per_command']:.0f} cpu us/command); "
              f"produced -> readable p50/p99 "
              f"{r.get('broker_p50_ms', nan):.1f}/{r.get('broker_p99_ms', nan):.1f} ms, readable -> received "
              f"{r.get('worker_p50_ms', nan):.1f}/{r.get('worker_p99_ms', nan):.1f} ms; "
              f"{diagnosis_line(r)}")
    print(f"dispatch latency at half load: p50 {latency['p50_ms']:.1f} ms (median of runs), "
          f"p99 {latency['p99_ms']:.1f} ms, p99.9 {latency['p999_ms']:.1f} ms (worst run)")
    for name, m in rss.items():
        print(f"{name:<10} peak RSS {m['peak_mb']:.0f} MB, holding 10k channels {m['holding_10k_mb']:.0f} MB; "
              f"RSS over the first run: {course(m['over_time_first_run'])}")
    max_rss = max((m["peak_mb"] for name, m in rss.items() if name in WORKERS), default=nan)
    print(f"bench: ingest {ratios['ingest_vs_baseline']:.2f}x baseline, "
          f"dispatch {ratios['dispatch_vs_http']:.2f}x http, "
          f"billing {ratios['billing_vs_baseline']:.2f}x baseline, p99 {latency['p99_ms']:.0f} ms, "
          f"max rss {max_rss:.0f} MB")
    scaled = [(s, rates.get(f"{s}_x{SCALE_OUT}", {}).get("median", nan), ratios[f"{s}_x{SCALE_OUT}_vs_one"])
              for s in ("ingest", "dispatch", "billing")]
    print(f"bench: {SCALE_OUT} instances: "
          + ", ".join(f"{s} {rate:,.0f}/s {ratio:.2f}x one" for s, rate, ratio in scaled))
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))  # the workers' loop: the HTTP ceiling and the harness's clients on it too
