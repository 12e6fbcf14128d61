"""Dispatch validation at WhatsApp's exact limits, authorisation, degradation and the three renderers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiplus.errors import ErrorCode, PermanentError
from services.dispatch import core
from services.dispatch.core import Channel, authorize, degrade, parse_command, render_command, token_digest

TOKEN = "channel-token-123"
PIX = ("00020126580014BR.GOV.BCB.PIX0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR5913"
       "Fulano de Tal6008BRASILIA62070503***63041D3D")


def command(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"command_id": "c1", "channel_id": "ch1", "token": TOKEN, "to": "5511999990000", "message": message,
            **extra}


def buttons(n: int, title_len: int = 5) -> dict[str, Any]:
    return {"kind": "buttons", "body": "b", "buttons": [{"id": f"id{i}", "title": f"{i}".ljust(title_len, "x")}
                                                        for i in range(n)]}


def list_message(rows_per_section: list[int], titles: bool = True) -> dict[str, Any]:
    sections = []
    n = 0
    for i, count in enumerate(rows_per_section):
        rows = []
        for _ in range(count):
            rows.append({"id": f"r{n}", "title": f"Row {n}"})
            n += 1
        sections.append({**({"title": f"S{i}"} if titles else {}), "rows": rows})
    return {"kind": "list", "body": "b", "button": "Ver", "sections": sections}


def refused(data: dict[str, Any]) -> PermanentError:
    with pytest.raises(PermanentError) as err:
        parse_command(data)
    return err.value


def channel(provider: str = "uazapi", mode: str = "plus", status: str = "active") -> Channel:
    return Channel("ch1", "t1", token_digest(TOKEN), provider, mode, status)


# --- limits at their boundaries ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_accepts_one_to_three_buttons(n: int) -> None:
    assert len(parse_command(command(buttons(n))).message["buttons"]) == n


def test_rejects_fourth_button() -> None:
    err = refused(command(buttons(4)))
    assert (err.code, err.field) == (ErrorCode.LIMIT_EXCEEDED, "message.buttons")


def test_rejects_zero_buttons() -> None:
    assert refused(command(buttons(0))).code == ErrorCode.LIMIT_EXCEEDED


def test_button_title_limit_is_twenty_characters() -> None:
    parse_command(command(buttons(1, title_len=20)))
    err = refused(command(buttons(1, title_len=21)))
    assert (err.code, err.field) == (ErrorCode.LIMIT_EXCEEDED, "message.buttons[0].title")


def test_button_titles_must_be_unique() -> None:
    msg = {"kind": "buttons", "body": "b", "buttons": [{"id": "1", "title": "Sim"}, {"id": "2", "title": "Sim"}]}
    assert refused(command(msg)).code == ErrorCode.INVALID_VALUE


def test_button_id_limit_is_256() -> None:
    parse_command(command({"kind": "buttons", "body": "b", "buttons": [{"id": "x" * 256, "title": "a"}]}))
    err = refused(command({"kind": "buttons", "body": "b", "buttons": [{"id": "x" * 257, "title": "a"}]}))
    assert err.field == "message.buttons[0].id"


@pytest.mark.parametrize(("field", "limit"), [("body", 1024), ("header", 60), ("footer", 60)])
def test_buttons_frame_limits(field: str, limit: int) -> None:
    ok = {**buttons(1), field: "x" * limit}
    parse_command(command(ok))
    err = refused(command({**buttons(1), field: "x" * (limit + 1)}))
    assert (err.code, err.field) == (ErrorCode.LIMIT_EXCEEDED, f"message.{field}")


def test_list_allows_ten_rows_in_total() -> None:
    parse_command(command(list_message([4, 3, 3])))
    err = refused(command(list_message([4, 4, 3])))
    assert err.code == ErrorCode.LIMIT_EXCEEDED
    assert "10 rows" in err.message


def test_list_sections_need_titles_only_when_more_than_one() -> None:
    parse_command(command(list_message([3], titles=False)))
    err = refused(command(list_message([2, 2], titles=False)))
    assert (err.code, err.field) == (ErrorCode.MISSING_FIELD, "message.sections[0].title")


@pytest.mark.parametrize(("key", "limit"), [("title", 24), ("description", 72), ("id", 200)])
def test_list_row_limits(key: str, limit: int) -> None:
    msg = list_message([1])
    msg["sections"][0]["rows"][0][key] = "x" * limit
    parse_command(command(msg))
    msg["sections"][0]["rows"][0][key] = "x" * (limit + 1)
    assert refused(command(msg)).field == f"message.sections[0].rows[0].{key}"


def test_list_button_and_section_title_limits() -> None:
    parse_command(command({**list_message([1]), "button": "x" * 20}))
    assert refused(command({**list_message([1]), "button": "x" * 21})).field == "message.button"
    msg = list_message([1, 1])
    msg["sections"][0]["title"] = "x" * 25
    assert refused(command(msg)).field == "message.sections[0].title"


def test_list_body_may_be_4096() -> None:
    parse_command(command({**list_message([1]), "body": "x" * 4096}))
    assert refused(command({**list_message([1]), "body": "x" * 4097})).code == ErrorCode.LIMIT_EXCEEDED


def test_list_at_most_ten_sections() -> None:
    assert refused(command(list_message([1] * 11))).field == "message.sections"


@pytest.mark.parametrize("url", ["ftp://x.com", "javascript:alert(1)", "https://", "http://a b.com", "x"])
def test_cta_url_accepts_only_http_and_https(url: str) -> None:
    msg = {"kind": "cta_url", "body": "b", "display_text": "Abrir", "url": url}
    assert refused(command(msg)).field == "message.url"


def test_cta_display_text_limit() -> None:
    msg = {"kind": "cta_url", "body": "b", "display_text": "x" * 20, "url": "https://example.com/p?q=1"}
    parse_command(command(msg))
    assert refused(command({**msg, "display_text": "x" * 21})).field == "message.display_text"


@pytest.mark.parametrize("code", ["", "   ", None])
def test_copy_code_must_not_be_empty(code: str | None) -> None:
    msg = {"kind": "copy_code", "body": "Pix", **({"code": code} if code is not None else {})}
    assert refused(command(msg)).field == "message.code"


def test_text_body_limit_and_recipient_digits() -> None:
    parse_command(command({"kind": "text", "body": "x" * 4096}))
    assert refused(command({"kind": "text", "body": "x" * 4097})).code == ErrorCode.LIMIT_EXCEEDED
    assert refused(command({"kind": "text", "body": "x"}, to="+5511999990000")).field == "to"
    assert refused(command({"kind": "text", "body": "x"}, to="1234567")).field == "to"


def test_unknown_kind_and_bad_not_after() -> None:
    assert refused(command({"kind": "carousel"})).field == "message.kind"
    assert refused(command({"kind": "text", "body": "x"}, not_after="tomorrow")).field == "not_after"


# --- authorisation -----------------------------------------------------------------------------------
def test_authorisation_outcomes() -> None:
    cmd = parse_command(command(buttons(2)))
    authorize(cmd, TOKEN, channel())
    cases = [("wrong", channel(), ErrorCode.UNAUTHORIZED), (None, channel(), ErrorCode.UNAUTHORIZED),
             (TOKEN, None, ErrorCode.UNAUTHORIZED), (TOKEN, channel(status="suspended"), ErrorCode.CHANNEL_INACTIVE),
             (TOKEN, channel(mode="plain"), ErrorCode.PLUS_REQUIRED)]
    for token, ch, code in cases:
        with pytest.raises(PermanentError) as err:
            authorize(cmd, token, ch)
        assert err.value.code == code
        assert TOKEN not in err.value.message


def test_plain_channel_with_text_fallback_gets_numbered_options() -> None:
    cmd = parse_command(command(buttons(3), fallback="text"))
    authorize(cmd, TOKEN, channel(mode="plain"))
    request = render_command(cmd, channel(mode="plain"))
    assert request.path == "/send/text"
    assert "1. 0xxxx\n2. 1xxxx\n3. 2xxxx" in request.body["text"]


def test_degraded_pix_code_stays_byte_identical_on_its_own_line() -> None:
    text = degrade(parse_command(command({"kind": "copy_code", "body": "Pague", "code": PIX})).message)["body"]
    assert PIX in text.split("\n")


@given(st.text(min_size=1, max_size=300).filter(lambda s: s.strip()))
def test_copy_codes_survive_rendering_unchanged(code: str) -> None:
    msg = parse_command(command({"kind": "copy_code", "body": "Pague", "code": code})).message
    assert msg["code"] == code
    assert degrade(msg)["body"].endswith(":\n\n" + code)  # its own paragraph, last (no footer here), unchanged
    uaz = render_command(parse_command(command({"kind": "copy_code", "body": "Pague", "code": code})),
                         channel("uazapi"))
    assert uaz.body["choices"][0].endswith("|copy:" + code)


# --- renderers (shapes as the providers document them) ---------------------------------------------
def test_cloudapi_renders_documented_bodies() -> None:
    req = render_command(parse_command(command({**buttons(2), "header": "H", "footer": "F"})), channel("cloudapi"))
    assert (req.method, req.path) == ("POST", "/ch1/messages")
    assert req.body["messaging_product"] == "whatsapp"
    assert req.body["recipient_type"] == "individual"
    assert req.body["type"] == "interactive"
    assert req.body["interactive"]["header"] == {"type": "text", "text": "H"}
    assert req.body["interactive"]["action"]["buttons"][0] == {"type": "reply", "reply": {"id": "id0",
                                                                                          "title": "0xxxx"}}
    cta = render_command(parse_command(command({"kind": "cta_url", "body": "b", "display_text": "Ver",
                                                "url": "https://x.io"})), channel("cloudapi"))
    assert cta.body["interactive"]["action"] == {"name": "cta_url",
                                                 "parameters": {"display_text": "Ver", "url": "https://x.io"}}
    loc = render_command(parse_command(command({"kind": "location_request", "body": "Onde?"})), channel("cloudapi"))
    assert loc.body["interactive"]["type"] == "location_request_message"
    assert loc.body["interactive"]["action"] == {"name": "send_location"}


def test_cloudapi_copy_code_needs_a_template() -> None:
    cmd = parse_command(command({"kind": "copy_code", "body": "Pix", "code": PIX}))
    with pytest.raises(PermanentError) as err:
        render_command(cmd, channel("cloudapi"))
    assert err.value.code == ErrorCode.UNSUPPORTED
    templated = parse_command(command({"kind": "copy_code", "body": "Pix", "code": PIX,
                                       "template": {"name": "pix_code", "language": "pt_BR"}}))
    body = render_command(templated, channel("cloudapi")).body
    assert body["type"] == "template"
    assert body["template"]["components"][1]["parameters"][0] == {"type": "coupon_code", "coupon_code": PIX}


def test_evolution_renders_send_buttons_and_send_list() -> None:
    req = render_command(parse_command(command(buttons(2))), channel("evolution"))
    assert req.path == "/message/sendButtons/ch1"
    assert req.body["buttons"][1] == {"type": "reply", "displayText": "1xxxx", "id": "id1"}
    lst = render_command(parse_command(command(list_message([1, 1]))), channel("evolution"))
    assert lst.path == "/message/sendList/ch1"
    assert lst.body["sections"][1]["rows"][0] == {"title": "Row 1", "description": "", "rowId": "r1"}
    pix = render_command(parse_command(command({"kind": "copy_code", "body": "Pix", "code": PIX})),
                         channel("evolution"))
    assert pix.body["buttons"] == [{"type": "copy", "displayText": "Copiar código", "copyCode": PIX}]
    with pytest.raises(PermanentError) as err:
        render_command(parse_command(command({"kind": "location_request", "body": "?"})), channel("evolution"))
    assert err.value.code == ErrorCode.UNSUPPORTED


def test_uazapi_renders_menu_choices() -> None:
    req = render_command(parse_command(command(buttons(2))), channel("uazapi"))
    assert (req.path, req.body["type"], req.body["choices"]) == ("/send/menu", "button", ["0xxxx|id0", "1xxxx|id1"])
    lst = render_command(parse_command(command(list_message([1, 1]))), channel("uazapi"))
    assert lst.body["choices"] == ["[S0]", "Row 0|r0", "[S1]", "Row 1|r1"]
    assert lst.body["listButton"] == "Ver"
    cta = render_command(parse_command(command({"kind": "cta_url", "body": "b", "display_text": "Ver",
                                                "url": "https://x.io"})), channel("uazapi"))
    assert cta.body["choices"] == ["Ver|https://x.io"]
    loc = render_command(parse_command(command({"kind": "location_request", "body": "Onde?"})), channel("uazapi"))
    assert (loc.path, loc.body) == ("/send/location-button", {"number": "5511999990000", "text": "Onde?"})


def test_rendered_requests_carry_no_credentials() -> None:
    for provider in ("cloudapi", "evolution", "uazapi"):
        req = render_command(parse_command(command(buttons(1))), channel(provider))
        assert TOKEN not in repr(req.as_dict())


def test_limits_match_the_reference() -> None:
    assert (core.BUTTONS_MAX, core.BUTTON_TITLE, core.ROWS_MAX, core.ROW_TITLE, core.LIST_BUTTON) == (3, 20, 10, 24, 20)
