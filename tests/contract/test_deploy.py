"""Deployment files that cannot run here (no Docker engine) are checked for what can be checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from apiplus.settings import WorkerSettings
from apiplus.topics import DEFAULT_PARTITIONS
from services.billing.settings import BillingSettings
from services.dispatch.settings import DispatchSettings
from services.ingest.settings import IngestSettings, WebhookSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"ingest": IngestSettings, "dispatch": DispatchSettings, "billing": BillingSettings}


def required_env() -> set[str]:
    names = set()
    for name, field in WorkerSettings.model_fields.items():
        if field.is_required():
            alias = field.validation_alias
            names.add(alias.choices[0] if isinstance(alias, AliasChoices) else name)
    return names


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())


def _k8s() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "apiplus.yaml").read_text()) if d]


def test_required_settings_are_the_broker_and_redis() -> None:
    assert required_env() == {"APIPLUS_KAFKA_BOOTSTRAP", "APIPLUS_REDIS_URL"}


@pytest.mark.parametrize("service", SETTINGS)
def test_compose_worker_has_settings_command_and_port(service: str) -> None:
    spec = _compose()["services"][service]
    env = {str(k): str(v) for k, v in spec["environment"].items()}
    assert required_env() <= set(env)
    assert spec["command"] == [service, "run"]
    port = SETTINGS[service].model_fields["http_port"].default
    assert env[f"APIPLUS_{service.upper()}_HTTP_PORT"] == str(port)
    assert env[f"APIPLUS_{service.upper()}_HTTP_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert f"{port}:{port}" in spec["ports"]


def test_compose_has_the_whole_stack() -> None:
    assert {"kafka", "redis", "prometheus", "grafana", "simulator", "ingest", "webhook", "dispatch", "billing"} <= set(
        _compose()["services"]
    )
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "compose.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"ingest:9101", "webhook:9180", "dispatch:9102", "billing:9103"}


@pytest.mark.parametrize("service", SETTINGS)
def test_k8s_deployment_probes_resources_config_and_secrets(service: str) -> None:
    docs = _k8s()
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"apiplus-{service}")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert 1 <= deployment["spec"]["replicas"] <= DEFAULT_PARTITIONS
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [service, "run"]
    port = SETTINGS[service].model_fields["http_port"].default
    assert container["ports"][0]["containerPort"] == port
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[f"APIPLUS_{service.upper()}_HTTP_HOST"] == "0.0.0.0"
    assert env[f"APIPLUS_{service.upper()}_HTTP_PORT"] == str(port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"apiplus-config", "apiplus-secrets"}
    provided = set(config["data"]) | set(secret["stringData"])
    assert required_env() <= provided


def test_k8s_secrets_live_in_the_secret_not_the_configmap() -> None:
    docs = _k8s()
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    for key in ("APIPLUS_KAFKA_SASL_PASSWORD", "APIPLUS_DISPATCH_CLOUDAPI_TOKEN", "APIPLUS_DISPATCH_EVOLUTION_APIKEY",
                "APIPLUS_DISPATCH_UAZAPI_TOKEN", "APIPLUS_REDIS_URL", "APIPLUS_INGEST_CLOUDAPI_APP_SECRET",
                "APIPLUS_INGEST_CLOUDAPI_VERIFY_TOKEN", "APIPLUS_INGEST_WEBHOOK_KEY"):
        assert key in secret
        assert key not in config


def test_dockerfile_runs_the_console_script() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["apiplus"]' in text
    assert "APIPLUS_SCHEMAS_DIR" in text  # the schemas travel with the image


WEBHOOK_PORT = WebhookSettings.model_fields["webhook_port"].default
WEBHOOK_SECRETS = {
    "APIPLUS_INGEST_CLOUDAPI_APP_SECRET", "APIPLUS_INGEST_CLOUDAPI_VERIFY_TOKEN", "APIPLUS_INGEST_WEBHOOK_KEY",
}


def test_compose_webhook_serves_the_ingress_on_its_port() -> None:
    spec = _compose()["services"]["webhook"]
    env = {str(k): str(v) for k, v in spec["environment"].items()}
    assert spec["command"] == ["ingest", "webhook"]
    assert env["APIPLUS_INGEST_WEBHOOK_HOST"] == "0.0.0.0"
    assert env["APIPLUS_INGEST_WEBHOOK_PORT"] == str(WEBHOOK_PORT)
    assert f"{WEBHOOK_PORT}:{WEBHOOK_PORT}" in spec["ports"]
    assert "APIPLUS_KAFKA_BOOTSTRAP" in env
    assert set(env) >= WEBHOOK_SECRETS
    assert all(env[k].startswith("${") for k in WEBHOOK_SECRETS)  # from the environment, not written here


def test_k8s_webhook_deployment_and_service() -> None:
    docs = _k8s()
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = named["Deployment", "apiplus-ingest-webhook"]
    service = named["Service", "apiplus-ingest-webhook"]
    secret = next(d for d in docs if d["kind"] == "Secret")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["ingest", "webhook"]
    assert container["ports"][0] == {"name": "http", "containerPort": WEBHOOK_PORT}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"APIPLUS_INGEST_WEBHOOK_HOST": "0.0.0.0", "APIPLUS_INGEST_WEBHOOK_PORT": str(WEBHOOK_PORT)}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {next(iter(s.values()))["name"] for s in container["envFrom"]} == {"apiplus-config", "apiplus-secrets"}
    assert set(secret["stringData"]) >= WEBHOOK_SECRETS
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
