"""The project's own Kafka set-up (deploy/infra.py): what can be checked without starting it."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("apiplus_deploy_infra", ROOT / "deploy" / "infra.py")
assert _spec is not None
assert _spec.loader is not None
infra = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = infra  # its dataclasses look their module up there
_spec.loader.exec_module(infra)


def test_cluster_ids_never_start_with_a_dash_and_hold_sixteen_bytes() -> None:
    # One URL-safe base64 id in 64 starts with "-", which kafka-storage's parser takes for an option:
    # 2 000 draws meet such a start with near certainty if it is not excluded.
    ids = [infra.new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
