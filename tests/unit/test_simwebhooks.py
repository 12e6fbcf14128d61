"""The simulator's gateway webhooks, in each dialect, are what ingest normalises into the loop's inputs."""

from __future__ import annotations

from typing import Any

import pytest

from apiplus.schemas import validate
from services.dispatch import simwebhooks
from services.dispatch.core import Channel, parse_command, render_command, token_digest
from services.ingest.core import Context, normalize

TO = "5511988887777"
PROVIDERS = ["cloudapi", "evolution", "uazapi"]
BUTTONS = {"kind": "buttons", "header": "Pedido", "body": "Confirma?",
           "buttons": [{"id": "yes", "title": "Sim"}, {"id": "no", "title": "Não"}]}


def accepted(provider: str, message: dict[str, Any], mode: str = "plus") -> simwebhooks.Accepted:
    command = parse_command({"command_id": "c", "channel_id": "inst-9", "token": "t", "to": TO, "message": message,
                             "fallback": "text"})
    request = render_command(command, Channel("inst-9", "t", token_digest("t"), provider, mode, "active"))
    return simwebhooks.accepted(provider, request.path, request.body, "MSG-1", default_instance="inst-9")


def one(payload: dict[str, Any]) -> dict[str, Any]:
    events = normalize(payload, Context(received_at_ms=1_795_000_000_000)).events
    assert len(events) == 1, events
    validate(events[0]["type"], events[0])
    assert events[0]["channel_id"] == "inst-9"
    return events[0]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("state", ["delivered", "read", "failed"])
def test_statuses_normalise_to_the_message_and_state(provider: str, state: str) -> None:
    event = one(simwebhooks.status(accepted(provider, BUTTONS), state, at=1_795_000_000.0))
    assert event["type"] == "message.status"
    assert (event["status"]["message_id"], event["status"]["state"]) == ("MSG-1", state)
    assert event["status"].get("from_me") is not False


@pytest.mark.parametrize("provider", ["evolution", "uazapi"])
def test_text_echo_carries_recipient_and_text(provider: str) -> None:
    event = one(simwebhooks.echo(accepted(provider, {"kind": "text", "body": "Olá, tudo bem?"})))
    assert event["type"] == "message.sent"
    assert (event["message"]["id"], event["message"]["to"], event["message"]["text"]) == ("MSG-1", TO,
                                                                                          "Olá, tudo bem?")
    assert event["message"]["by_api"] is not False


def test_degraded_buttons_echo_the_numbered_text() -> None:
    acc = accepted("evolution", BUTTONS, mode="plain")
    assert acc.kind == "text"
    assert "2. Não" in one(simwebhooks.echo(acc))["message"]["text"]


def test_cloud_api_does_not_echo_api_sends() -> None:
    with pytest.raises(ValueError, match="does not echo"):
        simwebhooks.echo(accepted("cloudapi", BUTTONS))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("kind", "reply_id", "title"), [("button_reply", "yes", "Sim"), ("list_reply", "r2", "B")])
def test_replies_quote_the_message_they_answer(provider: str, kind: str, reply_id: str, title: str) -> None:
    event = one(simwebhooks.reply(accepted(provider, BUTTONS), kind, reply_id=reply_id, title=title))
    message = event["message"]
    assert (event["type"], message["kind"], message["reply"]["id"]) == ("message.received", kind, reply_id)
    assert message["from"] == TO
    assert message["context"] == {"provider_message_id": "MSG-1"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_typed_text_without_a_quote_has_no_context(provider: str) -> None:
    message = one(simwebhooks.reply(accepted(provider, BUTTONS), "text", text="2", quote=False))["message"]
    assert (message["kind"], message["text"], message["from"]) == ("text", "2", TO)
    assert "context" not in message


def test_a_reply_needs_an_option_id() -> None:
    with pytest.raises(ValueError, match="reply_id"):
        simwebhooks.reply(accepted("uazapi", BUTTONS), "button_reply")
