"""The schemas are the contract: valid, exemplified, and in agreement with the code's topics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from apiplus.schemas import SCHEMA_BASE, schema_dir, validate
from apiplus.topics import DLQ_SOURCES, TOPICS

SCHEMAS = sorted(schema_dir().glob("*.json"))
EXAMPLES = sorted((schema_dir() / "examples").glob("*.json"))


def _registry() -> Registry:
    resources = [(SCHEMA_BASE + p.name, Resource.from_contents(json.loads(p.read_text()))) for p in SCHEMAS]
    return Registry().with_resources(resources)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_schema_is_valid_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_BASE + path.name
    Draft202012Validator.check_schema(schema)


def test_every_schema_has_an_example() -> None:
    assert {p.stem for p in SCHEMAS} == {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_with_both_validators(path: Path) -> None:
    example = json.loads(path.read_text())
    schema = json.loads((schema_dir() / path.name).read_text())
    Draft202012Validator(schema, registry=_registry()).validate(example)
    validate(path.stem, example)  # the compiled validator the workers use


def test_envelope_is_required_on_produced_events() -> None:
    example = json.loads((schema_dir() / "examples" / "channel.charged.json").read_text())
    del example["producer"]
    with pytest.raises(Exception, match="producer"):
        validate("channel.charged", example)


def _asyncapi() -> dict:
    return yaml.safe_load((schema_dir() / "asyncapi.yaml").read_text())


def test_asyncapi_names_exactly_the_topics_in_the_code() -> None:
    addresses = {c["address"] for c in _asyncapi()["channels"].values()}
    code = {t.name for t in TOPICS} | {t.dlq for t in DLQ_SOURCES}
    assert addresses == code


def test_asyncapi_keys_and_compaction_agree_with_the_code() -> None:
    by_address = {c["address"]: c for c in _asyncapi()["channels"].values()}
    for topic in TOPICS:
        channel = by_address[topic.name]
        assert channel["x-key"] == topic.key, topic.name
        assert bool(channel.get("x-compacted")) == topic.compacted, topic.name


def test_asyncapi_message_payloads_point_at_existing_schemas() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"].startswith("3.")
    for name, message in doc["components"]["messages"].items():
        ref = message["payload"].get("$ref")
        if ref is not None:
            assert (schema_dir() / ref).exists(), f"{name} -> {ref}"
    for channel in doc["channels"].values():
        for message in channel["messages"].values():
            assert message["$ref"].removeprefix("#/components/messages/") in doc["components"]["messages"]
