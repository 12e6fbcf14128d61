"""Integration tests run against the real Kafka and Redis that `make test` starts."""

from __future__ import annotations

import pytest

from tests.integration.kafkatools import bootstrap, redis_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return bootstrap()


@pytest.fixture(scope="session")
def redis_url_value() -> str:
    return redis_url()
