"""The KEDA ScaledObjects scale each worker on the lag of the groups and topics the worker really uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from apiplus.topics import TOPICS
from services.billing.settings import BillingSettings
from services.dispatch.settings import DispatchSettings
from services.ingest.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]
KEDA_DIR = ROOT / "deploy" / "k8s" / "keda"
PARTITIONS = {t.name: t.partitions for t in TOPICS}
# APIPLUS_KAFKA_SASL_MECHANISM -> the Kafka scaler's `sasl` value
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def default(settings: type, name: str) -> str:
    return str(settings.model_fields[name].default)


# (consumer group, topic) pairs each worker subscribes to, from the settings the workers read.
CONSUMED: dict[str, set[tuple[str, str]]] = {
    "ingest": {(default(IngestSettings, "group_id"), default(IngestSettings, "raw_topic")),
               (default(IngestSettings, "health_group_id"), default(IngestSettings, "events_topic"))},
    "dispatch": {(default(DispatchSettings, "group_id"), default(DispatchSettings, "commands_topic")),
                 (default(DispatchSettings, "group_id"), default(DispatchSettings, "retry_topic"))},
    "billing": {(default(BillingSettings, "group_id"), default(BillingSettings, "input_topic"))},
}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _keda() -> list[dict[str, Any]]:
    files = sorted(KEDA_DIR.glob("*.yaml"))
    assert files, f"no manifests in {KEDA_DIR}"
    return [d for f in files for d in _docs(f)]


def _app() -> list[dict[str, Any]]:
    return _docs(ROOT / "deploy" / "k8s" / "apiplus.yaml")


def _scaled_object(service: str) -> dict[str, Any]:
    found = [d for d in _keda() if d["kind"] == "ScaledObject" and d["spec"]["scaleTargetRef"]["name"]
             == f"apiplus-{service}"]
    assert len(found) == 1, f"expected one ScaledObject for apiplus-{service}, found {len(found)}"
    return found[0]


def test_every_consumed_topic_is_in_the_topic_table() -> None:
    for pairs in CONSUMED.values():
        for _, topic in pairs:
            assert topic in PARTITIONS


@pytest.mark.parametrize("service", CONSUMED)
def test_scaled_object_targets_the_worker_deployment(service: str) -> None:
    spec = _scaled_object(service)["spec"]
    deployments = {d["metadata"]["name"] for d in _app() if d["kind"] == "Deployment"}
    assert spec["scaleTargetRef"]["name"] in deployments
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"


@pytest.mark.parametrize("service", CONSUMED)
def test_triggers_are_the_workers_groups_and_topics(service: str) -> None:
    triggers = _scaled_object(service)["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    pairs = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in triggers}
    assert pairs == CONSUMED[service]
    assert len(pairs) == len(triggers)  # no trigger twice


@pytest.mark.parametrize("service", CONSUMED)
def test_trigger_settings(service: str) -> None:
    config = next(d for d in _app() if d["kind"] == "ConfigMap")["data"]
    for trigger in _scaled_object(service)["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert meta["bootstrapServers"] == config["APIPLUS_KAFKA_BOOTSTRAP"]  # the brokers the workers use
        assert int(meta["lagThreshold"]) > 0
        assert meta["offsetResetPolicy"] == "earliest"  # the workers start a new group at the earliest offset
        assert str(meta.get("allowIdleConsumers", "false")).lower() == "false"


@pytest.mark.parametrize("service", CONSUMED)
def test_replicas_never_exceed_the_partitions(service: str) -> None:
    spec = _scaled_object(service)["spec"]
    ceiling = min(PARTITIONS[topic] for _, topic in CONSUMED[service])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= ceiling


@pytest.mark.parametrize("service", CONSUMED)
def test_broker_credentials_come_from_secrets(service: str) -> None:
    config = next(d for d in _app() if d["kind"] == "ConfigMap")["data"]
    auths = {d["metadata"]["name"]: d for d in _keda() if d["kind"] == "TriggerAuthentication"}
    secrets = {d["metadata"]["name"]: d["stringData"] for d in [*_keda(), *_app()] if d["kind"] == "Secret"}
    for trigger in _scaled_object(service)["spec"]["triggers"]:
        assert "password" not in trigger["metadata"]
        refs = auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
        by_parameter = {r["parameter"]: r for r in refs}
        assert {"sasl", "username", "password", "tls"} <= set(by_parameter)
        for ref in refs:
            assert ref["key"] in secrets[ref["name"]]
        assert by_parameter["password"] == {"parameter": "password", "name": "apiplus-secrets",
                                            "key": "APIPLUS_KAFKA_SASL_PASSWORD"}
        # The scaler speaks to the broker the way the workers do.
        value = {p: secrets[r["name"]][r["key"]] for p, r in by_parameter.items()}
        assert value["sasl"] == KEDA_SASL[config["APIPLUS_KAFKA_SASL_MECHANISM"]]
        assert value["tls"] == ("enable" if config["APIPLUS_KAFKA_SECURITY_PROTOCOL"].endswith("SSL") else "disable")
        assert value["username"] == config["APIPLUS_KAFKA_SASL_USERNAME"]
