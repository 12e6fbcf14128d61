"""Results exactly once (issue 15, item 5): every `dispatch.results.v1` record once, every command one terminal result.

A burst of commands with invalid ones mixed in (refused at intake: each still owes one `rejected` result),
dispatch killed with kill -9 `times` times during it. Then the results topic, read with `read_committed`,
is counted per command: exactly one terminal result, no record twice (same `event_id`), none missing;
the simulator's log: each valid command received once, no invalid one at all; and the commands' DLQ: each
refused command dead-lettered once (a figure of the notes: a miss or a repeat fails the run).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from apiplus.topics import DISPATCH_COMMANDS, DISPATCH_RESULTS
from chaos.scenarios import Outcome, Scenarios
from chaos.stack import publish, read_topic

BURST = 3000
INVALID_EVERY = 10  # one command in ten is refused at intake
TERMINAL = {"sent", "rejected", "failed", "expired"}
SETTLE_SECONDS = 3.0  # after the last result: time for a late duplicate to show up before the final count


def _four_buttons(c: dict[str, Any]) -> None:
    c["message"] = {"kind": "buttons", "body": "Confirma o pedido?",
                    "buttons": [{"id": f"b{i}", "title": f"Opção {i}"} for i in range(4)]}


def _bad_token(c: dict[str, Any]) -> None:
    c["token"] = "chaos-not-this-channels-token"


def _missing_to(c: dict[str, Any]) -> None:
    del c["to"]


def _missing_message(c: dict[str, Any]) -> None:
    del c["message"]


def _long_button_title(c: dict[str, Any]) -> None:
    c["message"] = {"kind": "buttons", "body": "?", "buttons": [{"id": "a", "title": "x" * 21}]}


INVALID: tuple[Callable[[dict[str, Any]], None], ...] = (
    _four_buttons, _bad_token, _missing_to, _missing_message, _long_button_title)


def burst(scenarios: Scenarios, tag: str, n: int) -> tuple[list[tuple[bytes, bytes]], set[str], set[str]]:
    """`n` commands, every INVALID_EVERY-th one broken in one of the INVALID ways: (records, valid ids, invalid ids)."""
    records: list[tuple[bytes, bytes]] = []
    valid: set[str] = set()
    invalid: set[str] = set()
    for i, (key, value) in enumerate(scenarios.commands(tag, n)):
        command = orjson.loads(value)
        if i % INVALID_EVERY == INVALID_EVERY - 1:
            INVALID[(i // INVALID_EVERY) % len(INVALID)](command)
            invalid.add(command["command_id"])
        else:
            valid.add(command["command_id"])
        records.append((key, orjson.dumps(command)))
    return records, valid, invalid


async def results_of(scenarios: Scenarios, prefix: str) -> list[dict[str, Any]]:
    """Every committed result record of this burst's commands (read_committed: aborted transactions never show)."""
    records = await read_topic(scenarios.bootstrap, DISPATCH_RESULTS.name, idle=0.5, committed=True)
    events = (orjson.loads(r.value) for r in records if r.value)
    return [e for e in events if str(e.get("command_id", "")).startswith(prefix)]


async def dead_letters_of(scenarios: Scenarios, prefix: str) -> Counter[tuple[str, str]]:
    """This burst's committed dead letters on the commands' DLQ: how often each (command_id, event_id)."""
    found: Counter[tuple[str, str]] = Counter()
    for record in await read_topic(scenarios.bootstrap, DISPATCH_COMMANDS.dlq, idle=0.5, committed=True):
        letter = orjson.loads(record.value)
        try:
            command = orjson.loads(letter.get("payload") or "null")
        except orjson.JSONDecodeError:
            continue
        command_id = command.get("command_id") if isinstance(command, dict) else None
        if isinstance(command_id, str) and command_id.startswith(prefix):
            found[(command_id, letter["event_id"])] += 1
    return found


def count_dead_letters(letters: Counter[tuple[str, str]], invalid: set[str]) -> dict[str, Any]:
    """Each refused command: one dead letter, written once."""
    per_command = Counter(command_id for command_id, _ in letters)
    return {
        "dead_lettered": len(per_command.keys() & invalid),
        "missing_dead_letter": sorted(invalid - per_command.keys()),
        "duplicate_dead_letters": sum(n - 1 for n in letters.values()) + sum(n - 1 for n in per_command.values()),
        "valid_dead_lettered": sorted(per_command.keys() - invalid),
    }


def count(events: list[dict[str, Any]], valid: set[str], invalid: set[str],
          deliveries: Counter[str]) -> dict[str, Any]:
    """The figures: what is missing, what is doubled, what ended in the wrong state."""
    by_event_id = Counter(e["event_id"] for e in events)
    terminal: dict[str, set[tuple[str, str]]] = {}
    for e in events:
        if e.get("type") == "dispatch.result" and e.get("state") in TERMINAL:
            terminal.setdefault(e["command_id"], set()).add((e["event_id"], e["state"]))
    expected_state = {**dict.fromkeys(valid, "sent"), **dict.fromkeys(invalid, "rejected")}
    wrong_state = sorted(c for c, ends in terminal.items()
                         if c in expected_state and {s for _, s in ends} != {expected_state[c]})
    return {
        "missing_terminal": sorted(set(expected_state) - set(terminal)),
        "duplicate_records": sum(n - 1 for n in by_event_id.values()),
        "extra_terminal": sum(len(ends) - 1 for ends in terminal.values()),  # two different terminal states
        "wrong_state": wrong_state,
        "not_received": sorted(valid - set(deliveries)),
        "received_twice": sum(n - 1 for c, n in deliveries.items() if c in valid),
        "invalid_sent": sorted(c for c in deliveries if c in invalid),
        "records": len(events),
        "by_type_state": dict(Counter(f"{e.get('type')}/{e.get('state', e.get('status'))}" for e in events)),
        "reject_codes": dict(Counter(e["error"]["code"] for e in events if e.get("state") == "rejected")),
    }


async def run(scenarios: Scenarios, times: int, n: int = BURST, timeout: float = 240) -> Outcome:
    stack = scenarios.stack
    tag = f"once{uuid.uuid4().hex[:4]}"
    prefix = f"{scenarios.run}-{tag}-"
    inputs, valid, invalid = burst(scenarios, tag, n)
    size = -(-len(inputs) // (times + 1))
    chunks = [inputs[i * size:(i + 1) * size] for i in range(times + 1)]  # contiguous: per-key order kept
    recovered_at = time.monotonic()
    workers = [name for name in stack.procs if name.startswith("dispatch-") and stack.alive(name)]
    for i in range(times):
        await publish(scenarios.bootstrap, DISPATCH_COMMANDS.name, chunks[i])  # the restarted workers' backlog
        await asyncio.to_thread(stack.wait_ready, workers)
        await asyncio.sleep(random.uniform(0.3, 2.0))  # a random point while they work through the burst
        for name in workers:  # every dispatch instance (the rebalance scenario leaves two)
            stack.kill9(name)
        for name in workers:
            stack.start("dispatch", name.removeprefix("dispatch-"))
        recovered_at = time.monotonic()
    await publish(scenarios.bootstrap, DISPATCH_COMMANDS.name, chunks[-1])

    def deliveries() -> Counter[str]:
        return Counter({k: v for k, v in stack.deliveries().items() if k.startswith(prefix)})

    started = time.monotonic()
    while True:
        figures = count(await results_of(scenarios, prefix), valid, invalid, deliveries())
        done = not figures["missing_terminal"] and not figures["not_received"]
        if done or time.monotonic() - started > timeout:
            break
        await asyncio.sleep(1.0)
    recover = time.monotonic() - recovered_at
    await asyncio.sleep(SETTLE_SECONDS)
    figures = count(await results_of(scenarios, prefix), valid, invalid, deliveries())
    figures |= count_dead_letters(await dead_letters_of(scenarios, prefix), invalid)
    lost = len(figures["missing_terminal"]) + len(figures["not_received"])
    duplicated = figures["duplicate_records"] + figures["extra_terminal"] + figures["received_twice"]
    notes = {
        "ok": not any(figures[k] for k in ("wrong_state", "invalid_sent", "missing_dead_letter",
                                           "duplicate_dead_letters", "valid_dead_lettered")),
        "valid": len(valid), "invalid": len(invalid), "kills": times,
        **{k: (len(v) if isinstance(v, list) else v) for k, v in figures.items()},
        "examples": {k: v[:5] for k, v in figures.items() if isinstance(v, list) and v},
    }
    return Outcome(f"results once: burst + kill -9 dispatch x{times}", n, n, lost, duplicated,
                   recover_seconds=round(recover, 1), bad_inputs=len(invalid),
                   dead_lettered=figures["dead_lettered"], notes=notes)
