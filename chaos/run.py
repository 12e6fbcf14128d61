"""`make chaos`: faults, fuzz and leak scan against the real stack; a table, chaos/results.json, one summary line."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import orjson

from chaos import ingress, results_once
from chaos.scenarios import Outcome, Scenarios
from chaos.stack import SERVICES, Stack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))

import infra  # noqa: E402

KILLS = int(os.environ.get("CHAOS_KILLS", "3"))


async def main() -> int:
    state = infra.Infra.from_env("chaos")
    bootstrap = state.bootstrap
    redis_url = f"redis://127.0.0.1:{state.redis_port}/0"
    logs = ROOT / ".cache" / "chaos" / time.strftime("%Y%m%dT%H%M%S")
    stack = Stack(bootstrap, redis_url, logs)

    async def restart_broker() -> None:
        await asyncio.to_thread(infra.stop_kafka, state)
        await asyncio.sleep(3)
        await asyncio.to_thread(infra.kafka_up, state, False)
        await asyncio.to_thread(infra.kafka_wait, state)

    async def restart_redis() -> None:
        await asyncio.to_thread(infra.stop_redis, state)
        await asyncio.sleep(3)
        await asyncio.to_thread(infra.redis_up, state)

    scenarios = Scenarios(stack, restart_broker, restart_redis)
    outcomes: list[Outcome] = []
    try:
        await scenarios.setup()
        stack.start_simulator()
        for service in SERVICES:
            stack.start(service)
        stack.wait_ready([f"{s}-a" for s in SERVICES])
        for service in SERVICES:
            outcomes.append(await scenarios.kill9(service, KILLS))
            print(f"chaos: {outcomes[-1].scenario}: lost {outcomes[-1].lost}, duplicated {outcomes[-1].duplicated}",
                  flush=True)
        for step in (scenarios.broker_restart, scenarios.redis_restart, scenarios.rebalance,
                     lambda: results_once.run(scenarios, KILLS),
                     scenarios.provider_faults, scenarios.fuzz, scenarios.tokens,
                     lambda: ingress.broker_stop(stack, restart_broker)):
            outcomes.append(await step())
            print(f"chaos: {outcomes[-1].scenario}: lost {outcomes[-1].lost}, duplicated {outcomes[-1].duplicated}",
                  flush=True)
        stack.wait_ready([f"{s}-a" for s in SERVICES])
        outcomes.append(await scenarios.leaks())
    finally:
        codes = stack.stop_all()
    report = {"outcomes": [o.as_dict() for o in outcomes], "exit_codes": codes, "logs": str(logs)}
    (ROOT / "chaos" / "results.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print()
    print(f"{'scenario':<52}{'published':>10}{'expected':>10}{'lost':>6}{'dup':>5}{'recover s':>11}")
    for o in outcomes:
        rec = f"{o.recover_seconds:.1f}" if o.recover_seconds is not None else "-"
        print(f"{o.scenario:<52}{o.published:>10}{o.expected:>10}{o.lost:>6}{o.duplicated:>5}{rec:>11}")
    lost = sum(o.lost for o in outcomes)
    dup = sum(o.duplicated for o in outcomes)
    fuzzed = next(o for o in outcomes if o.scenario.startswith("fuzz"))
    leaks = sum(o.leaks for o in outcomes)
    print(f"chaos: {len(outcomes)} scenarios, lost {lost}, duplicated {dup}, bad inputs "
          f"{fuzzed.dead_lettered}/{fuzzed.bad_inputs} dead-lettered, leaks {leaks}")
    ok = lost == 0 and dup == 0 and leaks == 0 and fuzzed.dead_lettered == fuzzed.bad_inputs
    ok = ok and all(o.notes.get("ok", True) for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
