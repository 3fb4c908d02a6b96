"""Secret references resolve from the environment and never reach a log line."""

from __future__ import annotations

import logging

import pytest

from qcompile.errors import QcompileError
from qcompile.runtime.secrets import (
    RedactingFilter,
    SecretError,
    install_redaction,
    redact,
    reference_name,
    resolve,
)

KEY = "tk_live_9f8e7d6c5b4a"


def test_a_reference_resolves_from_the_given_environment() -> None:
    env = {"TICKDB_API_KEY": KEY}
    assert resolve("${oc.env:TICKDB_API_KEY}", env, what="feed.api_key") == KEY


def test_plain_values_and_none_pass_through() -> None:
    assert resolve("wss://feed.example/ws", {}, what="feed.url") == "wss://feed.example/ws"
    assert resolve("", {}, what="x") == ""
    assert resolve(None, {}, what="x") is None


def test_a_default_is_used_only_when_the_variable_is_unset() -> None:
    reference = "${oc.env:QCOMPILE_REDIS_URL,redis://localhost:6379/0}"
    assert resolve(reference, {}, what="url") == "redis://localhost:6379/0"
    assert resolve(reference, {"QCOMPILE_REDIS_URL": "redis://r/1"}, what="url") == "redis://r/1"
    assert resolve("${oc.env:PORT, '25'}", {}, what="port") == "25"
    assert resolve("${oc.env:PASSWORD,null}", {}, what="password") is None
    assert resolve("${oc.env:EMPTY}", {"EMPTY": ""}, what="x") == ""


def test_a_missing_variable_names_the_key_and_variable_but_no_value() -> None:
    with pytest.raises(SecretError) as caught:
        resolve("${oc.env:TICKDB_API_KEY}", {"OTHER": KEY}, what="feed.api_key")
    assert str(caught.value) == "feed.api_key: environment variable TICKDB_API_KEY is not set"
    assert isinstance(caught.value, QcompileError)


def test_an_embedded_reference_is_an_error_not_a_literal() -> None:
    with pytest.raises(SecretError, match="must be the whole value"):
        resolve("redis://:${oc.env:PW}@host/0", {"PW": KEY}, what="state_store.url")


def test_reference_name() -> None:
    assert reference_name("${oc.env:SLACK_WEBHOOK_URL}") == "SLACK_WEBHOOK_URL"
    assert reference_name("${oc.env:A_1,fallback}") == "A_1"
    assert reference_name("https://hooks.example/T/B/x") is None
    assert reference_name("${oc.env:1BAD}") is None
    assert reference_name(None) is None


def test_redact_hides_every_occurrence_longest_secret_first() -> None:
    text = f"key={KEY} again {KEY} prefix {KEY[:8]}"
    assert redact(text, [KEY, ""]) == f"key=*** again *** prefix {KEY[:8]}"
    assert redact(text, [KEY[:8], KEY]) == "key=*** again *** prefix ***"
    assert redact("nothing here", []) == "nothing here"


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("qcompile.test", logging.INFO, __file__, 1, msg, args, None)


def test_the_filter_redacts_a_secret_passed_as_a_format_argument() -> None:
    record = _record("connecting with key %s to %s", KEY, "feed")
    assert RedactingFilter([KEY]).filter(record) is True
    assert record.getMessage() == "connecting with key *** to feed"
    assert record.args == ()


def test_the_filter_redacts_tracebacks() -> None:
    try:
        raise RuntimeError(f"server rejected {KEY}")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "qcompile.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    RedactingFilter([KEY]).filter(record)
    formatted = logging.Formatter().format(record)
    assert "server rejected ***" in formatted and KEY not in formatted


def test_installed_redaction_keeps_a_key_out_of_captured_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    redacting = install_redaction([KEY])
    try:
        # a child logger: its records reach the root handlers (caplog's) by propagation
        logging.getLogger("qcompile.live.feed").info("subscribe key=%s", KEY)
        logging.getLogger("urllib3.connectionpool").debug("GET /v1?api_key=%s", KEY)
        logging.getLogger("websocket").warning("handshake %s", {"key": KEY})
        redacting.add("late-secret")
        logging.getLogger("qcompile").error("resolved %s", "late-secret")
    finally:
        redacting.uninstall()
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert KEY not in text and "late-secret" not in text
    assert "subscribe key=***" in text and "'key': '***'" in text
    assert len(caplog.records) == 4
    assert redacting not in logging.getLogger("qcompile").filters


def test_unformattable_arguments_do_not_leak_or_raise() -> None:
    record = _record("two %s %s", KEY)  # one argument short
    RedactingFilter([KEY]).filter(record)
    assert KEY not in record.getMessage()
