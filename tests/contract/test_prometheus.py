"""Prometheus config and alert rules: promtool checks them, unit-tests each alert, and every metric exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from apiplus.loopprobe import LoopProbe
from services.billing.metrics import BillingMetrics
from services.dispatch.metrics import DispatchMetrics
from services.ingest.metrics import IngestMetrics, WebhookMetrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is missing: `make deps` installs Debian's prometheus package")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False, cwd=PROM)


def test_promtool_checks_the_config() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", "rules/apiplus.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_passes_its_unit_tests() -> None:
    result = _promtool("test", "rules", "tests/apiplus.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_test() -> None:
    rules = yaml.safe_load((PROM / "rules" / "apiplus.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROM / "tests" / "apiplus.rules.test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    # Worker-down and the ratio alerts are quiet in the "before for:" or low-value cases of the same test.
    assert alerts == fired
    assert alerts - {"ApiplusDeadLetterRateHigh", "ApiplusConsumerLagGrowing"} <= quiet


def exported_metric_names() -> set[str]:
    """Every series name the workers can export (labelled families have no samples until used)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: set[str] = {"up"}
    for metrics in (IngestMetrics, WebhookMetrics, DispatchMetrics, BillingMetrics, LoopProbe):  # probe: every worker
        registry = CollectorRegistry()
        metrics(registry)
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def test_alert_expressions_name_only_exported_metrics() -> None:
    rules = yaml.safe_load((PROM / "rules" / "apiplus.rules.yml").read_text())
    exported = exported_metric_names()
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"\b(apiplus_[a-z_]+|kafka_consumergroup_lag|up)\b", rule["expr"]):
                assert name in exported, f"{rule['alert']} uses {name}, which no worker exports"
