"""`make run`: Kafka, Redis, Prometheus, the provider simulator, the three workers and the webhook ingress.

Ctrl-C (or SIGTERM) stops the workers gracefully, then the simulator, Prometheus, Kafka and Redis,
leaving no process behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))

import infra  # noqa: E402

COLOURS = {"ingest": "36", "dispatch": "35", "billing": "33", "simulator": "32", "prometheus": "34", "webhook": "96"}
PORTS = {"ingest": 9101, "dispatch": 9102, "billing": 9103}
WEBHOOK_PORT = 9180  # `apiplus ingest webhook`: the gateways' webhooks, with /metrics and /readyz on the same port
# Local-only webhook secrets (never printed): use them to point a local gateway or curl at the ingress.
WEBHOOK_SECRETS = {
    "APIPLUS_INGEST_CLOUDAPI_VERIFY_TOKEN": "local-verify-token-0001",
    "APIPLUS_INGEST_CLOUDAPI_APP_SECRET": "local-app-secret-000001",
    "APIPLUS_INGEST_WEBHOOK_KEY": "local-ingress-key-00001",
}
SIMULATOR_PORT = 18080
PROMETHEUS_PORT = 19090


def _env(state: infra.Infra) -> dict[str, str]:
    simulator = f"http://127.0.0.1:{SIMULATOR_PORT}"
    return {
        **os.environ,
        "APIPLUS_KAFKA_BOOTSTRAP": state.bootstrap,
        "APIPLUS_REDIS_URL": f"redis://127.0.0.1:{state.redis_port}/0",
        # Every provider points at the local simulator, which speaks all three formats.
        "APIPLUS_DISPATCH_SIMULATOR_URL": simulator,
        "APIPLUS_DISPATCH_CLOUDAPI_URL": simulator,
        "APIPLUS_DISPATCH_EVOLUTION_URL": simulator,
        "APIPLUS_DISPATCH_UAZAPI_URL": simulator,
        "APIPLUS_DISPATCH_CLOUDAPI_TOKEN": "local-cloudapi-token",
        "APIPLUS_DISPATCH_EVOLUTION_APIKEY": "local-evolution-key",
        "APIPLUS_DISPATCH_UAZAPI_TOKEN": "local-uazapi-token",
        "APIPLUS_DISPATCH_IDEMPOTENT_PROVIDERS": "simulator,cloudapi,evolution,uazapi",
        "APIPLUS_INGEST_WEBHOOK_PORT": str(WEBHOOK_PORT),
        **WEBHOOK_SECRETS,
        "PYTHONUNBUFFERED": "1",
    }


def _pretty(name: str, line: str) -> str:
    tag = f"\033[{COLOURS.get(name, '0')}m{name:>10}\033[0m | "
    try:
        entry = json.loads(line)
    except ValueError:
        return tag + line
    if not isinstance(entry, dict) or "msg" not in entry:
        return tag + line
    skip = {"ts", "level", "service", "logger", "msg"}
    fields = " ".join(f"{k}={v}" for k, v in entry.items() if k not in skip)
    return f"{tag}{entry.get('level', ''):<7} {entry['msg']} {fields}".rstrip()


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        print(_pretty(name, line.decode(errors="replace").rstrip()), flush=True)


async def _spawn(name: str, argv: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    asyncio.get_running_loop().create_task(_pump(name, proc.stdout))
    return proc


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _infra_up(state: infra.Infra) -> None:
    infra.redis_up(state)
    infra.kafka_up(state)
    infra.kafka_wait(state)
    infra.create_topics(state)


async def main() -> int:
    state = infra.Infra.from_env("run")
    env = _env(state)
    python = sys.executable
    procs: dict[str, asyncio.subprocess.Process] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.to_thread(_infra_up, state)
        sim_log = state.state_dir / "simulator" / "requests.jsonl"
        procs["simulator"] = await _spawn("simulator", [
            python, "-m", "services.cli", "dispatch", "simulator", "--port", str(SIMULATOR_PORT), "--log", str(sim_log),
            # It can also play the gateway (statuses, echoes, replies into the raw topic): POST /_sim/loop.
            "--kafka-bootstrap", state.bootstrap,
        ], env)
        prometheus = infra.prometheus_command(state, PROMETHEUS_PORT)
        if prometheus is not None:
            procs["prometheus"] = await _spawn("prometheus", prometheus, env)
        for service in PORTS:
            procs[service] = await _spawn(service, [python, "-m", "services.cli", service, "run"], env)
        procs["webhook"] = await _spawn("webhook", [python, "-m", "services.cli", "ingest", "webhook"], env)
        deadline = time.monotonic() + 120
        pending = {**PORTS, "webhook": WEBHOOK_PORT}
        while pending and time.monotonic() < deadline and not stop.is_set():
            for service, port in list(pending.items()):
                if await asyncio.to_thread(_ready, port):
                    print(f"run: {service} ready on http://127.0.0.1:{port}/readyz", flush=True)
                    del pending[service]
            await asyncio.sleep(0.5)
        if not pending:
            print(
                "run: everything is up. Kafka "
                f"{state.bootstrap}, Redis 127.0.0.1:{state.redis_port}, simulator http://127.0.0.1:{SIMULATOR_PORT}, "
                f"Prometheus http://127.0.0.1:{PROMETHEUS_PORT}, webhooks http://127.0.0.1:{WEBHOOK_PORT}/webhooks/"
                "{cloudapi,evolution,uazapi} (local secrets: WEBHOOK_SECRETS in deploy/run.py). "
                "Try: .venv/bin/python deploy/demo.py. Ctrl-C stops everything.",
                flush=True,
            )
        waiters = [asyncio.create_task(p.wait()) for p in procs.values()]
        await asyncio.wait([asyncio.create_task(stop.wait()), *waiters], return_when=asyncio.FIRST_COMPLETED)
        for name, proc in procs.items():
            if proc.returncode is not None and not stop.is_set():
                print(f"run: {name} exited with {proc.returncode}; stopping everything", flush=True)
    finally:
        print("run: stopping", flush=True)
        for name in ("webhook", "ingest", "dispatch", "billing", "simulator", "prometheus"):
            proc = procs.get(name)
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.to_thread(infra.down, state)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except subprocess.CalledProcessError as exc:
        sys.exit(f"run: {exc}")
