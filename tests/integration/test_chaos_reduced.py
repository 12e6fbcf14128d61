"""The reduced chaos suite of `make test`: one kill -9 per worker, the fuzz corpus, bad tokens, the leak scan.

The full suite (`make chaos`) adds repeated kills, broker and Redis restarts, a rebalance and provider faults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chaos.scenarios import Scenarios
from chaos.stack import SERVICES, Stack
from tests.integration.kafkatools import bootstrap, redis_url


@pytest.fixture(scope="module")
async def scenarios(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scenarios]:
    stack = Stack(bootstrap(), redis_url(), Path(tmp_path_factory.mktemp("chaos")))
    chaos = Scenarios(stack)
    await chaos.setup()
    stack.start_simulator()
    for service in SERVICES:
        stack.start(service)
    stack.wait_ready([f"{s}-a" for s in SERVICES])
    yield chaos
    codes = stack.stop_all()
    assert all(code == 0 for name, code in codes.items() if name != "simulator"), codes


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", SERVICES)
async def test_kill9_loses_and_duplicates_nothing(scenarios: Scenarios, service: str) -> None:
    outcome = await scenarios.kill9(service, 1)
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome


@pytest.mark.timeout(300)
async def test_fuzz_corpus_is_dead_lettered_and_good_records_pass(scenarios: Scenarios) -> None:
    outcome = await scenarios.fuzz()
    assert outcome.notes["workers_alive"]
    assert outcome.dead_lettered == outcome.bad_inputs, outcome.notes["reasons"]
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert "internal_error" not in outcome.notes["reasons"]


@pytest.mark.timeout(120)
async def test_missing_wrong_and_other_tenant_tokens_are_refused(scenarios: Scenarios) -> None:
    outcome = await scenarios.tokens()
    assert sorted(outcome.notes["codes"].values()) == ["missing_field", "unauthorized", "unauthorized"]
    assert outcome.duplicated == 0  # nothing was sent
    assert outcome.notes["rejects_counted_by_this_instance"] >= 3


@pytest.mark.timeout(180)
async def test_no_secret_reaches_a_topic_log_or_metric(scenarios: Scenarios) -> None:
    outcome = await scenarios.leaks()
    assert outcome.notes["topics_scanned"] >= 10
    assert outcome.leaks == 0, outcome.notes["found"]
