"""Every dashboard query parses as PromQL (promtool) and names only metrics the workers export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.contract.test_prometheus import PROMTOOL, exported_metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "apiplus-dashboard.json"
FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "clamp_min", "by", "le", "up"}


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_covers_what_the_sres_asked_for() -> None:
    titles = " ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for topic in ("throughput", "lag", "dead", "state", "condition", "sends", "held", "billing", "webhook"):
        assert topic in titles


def test_the_webhook_alerts_are_on_the_dashboard() -> None:
    queries = _queries()
    for code in ("401", "503"):  # ApiplusWebhookUnauthorizedSurge, ApiplusWebhookUnavailable
        assert any("apiplus_ingest_webhook_requests_total" in q and f'code="{code}"' in q for q in queries), code
    assert any("apiplus_ingest_webhook_ack_duration_seconds_bucket" in q for q in queries)


def test_every_query_parses(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(_queries())
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_query_names_exported_metrics() -> None:
    exported = exported_metric_names()
    for expr in _queries():
        for name in re.findall(r"\b(apiplus_[a-z_]+|kafka_consumergroup_lag)\b", expr):
            assert name in exported, f"{name} in {expr!r} is not exported by any worker"
