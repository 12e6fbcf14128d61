"""Local infrastructure for apiplus: a real single-node Kafka (KRaft) and Redis, started by the project.

Usage: python deploy/infra.py {up,down,reset,status,topics} [--profile run|test]

Profiles keep `make run` and `make test` apart: different ports and data folders, and only the
`run` profile persists Redis to disk. Every port and folder can be overridden from the environment
(APIPLUS_KAFKA_PORT, APIPLUS_KAFKA_CONTROLLER_PORT, APIPLUS_REDIS_PORT, APIPLUS_STATE_DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAFKA_LIBS = ROOT / ".cache" / "kafka" / "libs"
# Local-only SCRAM credentials for the broker's SASL listener (kafka port + 2); not a production secret.
SCRAM_USER = "apiplus"
SCRAM_PASSWORD = "apiplus-local-scram"
# Every port sits below the kernel's ephemeral range (32768-60999 by default): a broker restarted in the
# chaos suite must be able to bind its port again, and a client retrying a closed port in that range can
# be handed the very same port as its own source and connect to itself.
PROFILES = {
    "run": {"kafka": 19092, "controller": 19093, "redis": 16379, "persist": True},
    "test": {"kafka": 29092, "controller": 29093, "redis": 26379, "persist": False},
    "bench": {"kafka": 24092, "controller": 24093, "redis": 24379, "persist": False},
    # chaos restarts the broker and Redis mid-run: both keep their data across those restarts.
    "chaos": {"kafka": 25092, "controller": 25093, "redis": 25379, "persist": True},
}


@dataclass(frozen=True)
class Infra:
    profile: str
    kafka_port: int
    controller_port: int
    redis_port: int
    state_dir: Path
    persist: bool

    @classmethod
    def from_env(cls, profile: str) -> Infra:
        base = PROFILES[profile]
        state = Path(os.environ.get("APIPLUS_STATE_DIR", ROOT / ".cache" / "state" / profile))
        return cls(
            profile=profile,
            kafka_port=int(os.environ.get("APIPLUS_KAFKA_PORT", base["kafka"])),
            controller_port=int(os.environ.get("APIPLUS_KAFKA_CONTROLLER_PORT", base["controller"])),
            redis_port=int(os.environ.get("APIPLUS_REDIS_PORT", base["redis"])),
            state_dir=state.resolve(),
            persist=bool(base["persist"]),
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def sasl_port(self) -> int:
        return self.kafka_port + 2

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


def _say(msg: str) -> None:
    print(f"infra: {msg}", flush=True)


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _running(pid) else None


def _running(pid: int) -> bool:
    """Alive and not a zombie (a daemon whose parent never reaps it still answers kill -0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        sys.exit("infra: java not found; install a JDK 17 (make deps does)")
    return found


def _kafka_cmd(infra: Infra, *args: str) -> list[str]:
    heap = os.environ.get("APIPLUS_KAFKA_HEAP", "-Xmx768m -Xms256m").split()
    return [
        _java(),
        *heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={infra.log_dir}",
        f"-Dlog4j2.configurationFile={ROOT / 'deploy' / 'kafka' / 'log4j2.properties'}",
        "-cp",
        f"{KAFKA_LIBS}/*",
        *args,
    ]


def new_cluster_id() -> str:
    """A random cluster id as `kafka-storage random-uuid` gives: 16 bytes in URL-safe base64 without padding,
    never starting with "-" (the storage tool's argument parser would read that as an option; one id in
    64 did, and `make test` failed to start Kafka)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _render_server_properties(infra: Infra) -> Path:
    template = (ROOT / "deploy" / "kafka" / "server.properties.in").read_text()
    rendered = (
        template.replace("@KAFKA_PORT@", str(infra.kafka_port))
        .replace("@CONTROLLER_PORT@", str(infra.controller_port))
        .replace("@SASL_PORT@", str(infra.sasl_port))
        .replace("@DATA_DIR@", str(infra.kafka_dir))
        # Tests run without fsync pressure; `make run` keeps Kafka's default (flush by the OS).
        .replace("@FLUSH_MESSAGES@", "9223372036854775807")
    )
    path = infra.kafka_dir / "server.properties"
    path.write_text(rendered)
    return path


def kafka_up(infra: Infra, fresh: bool | None = None) -> None:
    """Start the broker; `fresh` (default: profiles without persistence) wipes its data first."""
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        sys.exit("infra: Kafka jars missing in .cache/kafka/libs; run `make deps`")
    pid_file = infra.kafka_dir / "kafka.pid"
    if _pid_alive(pid_file):
        _say(f"kafka already running on {infra.bootstrap}")
        return
    if _port_open(infra.kafka_port):
        sys.exit(f"infra: port {infra.kafka_port} is taken by another process")
    if (not infra.persist) if fresh is None else fresh:
        # test and bench start from an empty cluster every time: no recovery of old logs, no old topics.
        shutil.rmtree(infra.kafka_dir, ignore_errors=True)
    infra.kafka_dir.mkdir(parents=True, exist_ok=True)
    infra.log_dir.mkdir(parents=True, exist_ok=True)
    props = _render_server_properties(infra)
    if not (infra.kafka_dir / "log" / "meta.properties").exists():
        cluster_id = new_cluster_id()
        subprocess.run(
            _kafka_cmd(infra, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                       "--add-scram", f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    with (infra.log_dir / "kafka.out").open("ab") as out:
        proc = subprocess.Popen(
            _kafka_cmd(infra, "kafka.Kafka", str(props)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    _say(f"kafka starting on {infra.bootstrap} (pid {proc.pid}, logs in {infra.log_dir})")


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    finally:
        await admin.close()


def kafka_wait(infra: Infra, timeout: float = 90.0) -> None:
    """Ready means a metadata request succeeds, not merely an open port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid_alive(infra.kafka_dir / "kafka.pid") is None:
            tail = (infra.log_dir / "kafka.out").read_text(errors="replace")[-2000:]
            sys.exit(f"infra: kafka exited during start-up:\n{tail}")
        if _port_open(infra.kafka_port) and asyncio.run(_metadata_ok(infra.bootstrap)):
            _say("kafka ready")
            return
        time.sleep(0.5)
    sys.exit(f"infra: kafka not ready after {timeout:.0f}s; see {infra.log_dir}/server.log")


def stop_kafka(infra: Infra) -> None:
    _stop(infra.kafka_dir / "kafka.pid", "kafka")


def stop_redis(infra: Infra) -> None:
    _stop(infra.redis_dir / "redis.pid", "redis")


def redis_up(infra: Infra) -> None:
    pid_file = infra.redis_dir / "redis.pid"
    if _pid_alive(pid_file):
        _say(f"redis already running on port {infra.redis_port}")
        return
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(server).exists():
        sys.exit("infra: redis-server not found; run `make deps`")
    infra.redis_dir.mkdir(parents=True, exist_ok=True)
    infra.log_dir.mkdir(parents=True, exist_ok=True)
    persistence = (
        ["--appendonly", "yes", "--save", "60 1"] if infra.persist else ["--appendonly", "no", "--save", ""]
    )
    subprocess.run(
        [
            server,
            "--port", str(infra.redis_port),
            "--bind", "127.0.0.1",
            "--dir", str(infra.redis_dir),
            "--daemonize", "yes",
            "--pidfile", str(pid_file),
            "--logfile", str(infra.log_dir / "redis.log"),
            *persistence,
        ],
        check=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _redis_ping(infra.redis_port):
            _say(f"redis ready on port {infra.redis_port}")
            return
        time.sleep(0.2)
    sys.exit("infra: redis did not answer PING")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop(pid_file: Path, name: str, grace: float = 30.0) -> None:
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _running(pid):
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    _say(f"{name} stopped")


def down(infra: Infra) -> None:
    _stop(infra.kafka_dir / "kafka.pid", "kafka")
    _stop(infra.redis_dir / "redis.pid", "redis")


def reset(infra: Infra) -> None:
    down(infra)
    shutil.rmtree(infra.state_dir, ignore_errors=True)
    _say(f"removed {infra.state_dir}")


def create_topics(infra: Infra) -> None:
    sys.path.insert(0, str(ROOT))
    from apiplus.topics import ensure_topics

    created = asyncio.run(ensure_topics(infra.bootstrap))
    _say(f"topics ready ({created} created)")


def prometheus_command(infra: Infra, port: int) -> list[str] | None:
    """argv of a real Prometheus scraping the local workers, or None when it is not installed."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        _say("prometheus not installed; skipping it (make deps installs it)")
        return None
    data = infra.state_dir / "prometheus"
    data.mkdir(parents=True, exist_ok=True)
    return [
        binary,
        f"--config.file={ROOT / 'deploy' / 'prometheus' / 'prometheus.yml'}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2d",
        "--log.level=warn",
    ]


def status(infra: Infra) -> int:
    kafka = _pid_alive(infra.kafka_dir / "kafka.pid")
    redis = _pid_alive(infra.redis_dir / "redis.pid")
    print(f"kafka  {infra.bootstrap:<18} {'up pid ' + str(kafka) if kafka else 'down'}")
    print(f"redis  127.0.0.1:{infra.redis_port:<8} {'up pid ' + str(redis) if redis else 'down'}")
    return 0 if kafka and redis else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "reset", "status", "topics", "env"])
    parser.add_argument("--profile", choices=sorted(PROFILES), default=os.environ.get("APIPLUS_PROFILE", "run"))
    args = parser.parse_args()
    infra = Infra.from_env(args.profile)
    if args.action == "up":
        redis_up(infra)
        kafka_up(infra)
        kafka_wait(infra)
        create_topics(infra)
    elif args.action == "down":
        down(infra)
    elif args.action == "reset":
        reset(infra)
    elif args.action == "topics":
        create_topics(infra)
    elif args.action == "env":
        print(f"APIPLUS_KAFKA_BOOTSTRAP={infra.bootstrap}")
        print(f"APIPLUS_REDIS_URL=redis://127.0.0.1:{infra.redis_port}/0")
        print(f"APIPLUS_TEST_SASL_BOOTSTRAP=127.0.0.1:{infra.sasl_port}")
    else:
        return status(infra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
