"""Alerts reach real local webhook and SMTP servers, never block the caller, never leak secrets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from qcompile.runtime.alerts import (
    Alert,
    AlertConfigError,
    Alerter,
    EmailSink,
    LogSink,
    WebhookSink,
    build_sinks,
)
from qcompile.runtime.secrets import SecretError
from tests.integration.conftest import HttpReceiver, SmtpSink, free_port

HOOK_TOKEN = "s3cretHookToken"  # the secret part of the receiver's URL (see conftest)


def alert(key: str = "feed.disconnected", severity: str = "critical", **kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "summary": "feed disconnected",
        "strategy_id": "STR-2026-0051",
        "details": {"reconnects": 3},
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    return Alert(key=key, severity=severity, **{**fields, **kw})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingSink:
    name = "recorder"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def deliver(self, alert: Alert) -> None:
        self.alerts.append(alert)


def _alerter(sinks: list[Any], **kw: Any) -> Alerter:
    return Alerter(sinks, retry_delay_s=0.0, **kw)


# -- sinks against real servers -------------------------------------------------------------------


def test_webhook_posts_a_slack_compatible_body(http_receiver: HttpReceiver) -> None:
    alerter = _alerter([WebhookSink(http_receiver.url)])
    assert alerter.send(alert()) is True
    assert alerter.flush()
    alerter.close()
    [body] = http_receiver.bodies
    assert body["text"] == "CRITICAL STR-2026-0051 feed disconnected"
    assert body["alert"]["key"] == "feed.disconnected"
    assert body["alert"]["details"] == {"reconnects": 3}
    assert body["alert"]["at"] == "2026-01-02T03:04:05+00:00"
    assert http_receiver.paths == ["/services/T0000/B0000/s3cretHookToken"]
    assert alerter.delivered == [("webhook", "feed.disconnected")]


def test_email_arrives_with_subject_recipients_and_details(smtp_sink: SmtpSink) -> None:
    sink = EmailSink(
        ["ops@example.com", "pm@example.com"],
        smtp_sink.host,
        smtp_sink.port,
        sender="runner@desk.example",
    )
    alerter = _alerter([sink])
    alerter.send(alert(details={"reconnects": 3, "last_error": "timeout"}))
    assert alerter.flush()
    alerter.close()
    [mail] = smtp_sink.messages
    assert mail.mail_from == "runner@desk.example"
    assert mail.rcpt_tos == ["ops@example.com", "pm@example.com"]
    assert mail.message["Subject"] == "[qcompile] CRITICAL STR-2026-0051 feed disconnected"
    assert mail.message["To"] == "ops@example.com, pm@example.com"
    body = mail.message.get_payload(decode=True).decode()
    assert "key:       feed.disconnected" in body
    assert "last_error: timeout" in body and "reconnects: 3" in body


def test_a_failing_webhook_is_retried_then_recorded_while_email_still_arrives(
    http_receiver: HttpReceiver, smtp_sink: SmtpSink
) -> None:
    http_receiver.statuses_to_return = [500, 500, 500]
    sinks = [WebhookSink(http_receiver.url), EmailSink(["ops@x"], smtp_sink.host, smtp_sink.port)]
    alerter = _alerter(sinks, retries=2)
    alerter.send(alert())
    assert alerter.flush()
    alerter.close()
    assert len(http_receiver.bodies) == 3  # one try and two retries
    assert alerter.failures == [("webhook", "feed.disconnected", "HTTP 500")]
    assert alerter.delivered == [("email", "feed.disconnected")]
    assert len(smtp_sink.messages) == 1


def test_a_retry_that_succeeds_is_a_delivery(http_receiver: HttpReceiver) -> None:
    http_receiver.statuses_to_return = [500, 200]
    alerter = _alerter([WebhookSink(http_receiver.url)])
    alerter.send(alert())
    assert alerter.flush()
    alerter.close()
    assert len(http_receiver.bodies) == 2
    assert alerter.delivered == [("webhook", "feed.disconnected")] and alerter.failures == []


def test_send_does_not_wait_for_a_slow_smtp_server(
    smtp_sink: SmtpSink, http_receiver: HttpReceiver
) -> None:
    smtp_sink.gate.clear()  # the server accepts DATA, then hangs
    sinks = [EmailSink(["ops@x"], smtp_sink.host, smtp_sink.port), WebhookSink(http_receiver.url)]
    alerter = _alerter(sinks)
    assert alerter.send(alert("runner.safe_state"))
    assert smtp_sink.messages == []  # send returned before the server had the message
    assert smtp_sink.entered.wait(5)  # delivery is under way, stuck in the server
    assert alerter.send(alert("feed.contract"))  # still not blocked
    assert smtp_sink.messages == []
    # the webhook worker is independent of the stuck email one
    assert _wait_for(lambda: len(http_receiver.bodies) == 2)
    smtp_sink.gate.set()
    assert alerter.flush(10)
    alerter.close()
    assert len(smtp_sink.messages) == 2
    assert sorted(alerter.delivered) == sorted(
        [
            (sink, key)
            for sink in ("email", "webhook")
            for key in ("runner.safe_state", "feed.contract")
        ]
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_log_sink_logs_at_the_severity_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qcompile.alerts")
    alerter = _alerter([LogSink()])
    alerter.send(alert(severity="warning", key="k1"))
    alerter.send(alert(severity="critical", key="k2"))
    assert alerter.flush()
    alerter.close()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", 'ALERT WARNING STR-2026-0051 feed disconnected [k1] {"reconnects": 3}'),
        ("CRITICAL", 'ALERT CRITICAL STR-2026-0051 feed disconnected [k2] {"reconnects": 3}'),
    ]


# -- de-duplication and rate limit (fake clock) ---------------------------------------------------


def test_duplicates_are_suppressed_within_the_window_and_counted() -> None:
    clock, sink = FakeClock(), RecordingSink()
    alerter = _alerter([sink], dedupe_window_s=300, clock=clock)
    assert alerter.send(alert(severity="warning")) is True
    clock.now += 100
    assert alerter.send(alert(severity="warning")) is False
    assert alerter.send(alert(severity="info")) is False  # lower severity: still a repeat
    assert alerter.send(alert("other.key", severity="warning")) is True  # keys are separate
    assert alerter.suppressed == {"feed.disconnected": 2}
    clock.now += 200  # 300 s after the delivered one: the window is over
    assert alerter.send(alert(severity="warning")) is True
    assert alerter.suppressed == {}
    assert alerter.flush()
    alerter.close()
    assert [a.suppressed for a in sink.alerts] == [0, 0, 2]
    assert sink.alerts[2].headline.endswith("feed disconnected (2 similar suppressed)")


def test_a_higher_severity_passes_the_dedupe_window() -> None:
    clock, sink = FakeClock(), RecordingSink()
    alerter = _alerter([sink], clock=clock)
    assert alerter.send(alert(severity="info"))
    assert alerter.send(alert(severity="warning"))
    assert alerter.send(alert(severity="critical"))
    assert not alerter.send(alert(severity="critical"))
    assert not alerter.send(alert(severity="warning"))
    alerter.close()
    assert [a.severity for a in sink.alerts] == ["info", "warning", "critical"]


def test_rate_limit_is_a_sliding_minute_and_applies_to_critical_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, sink = FakeClock(), RecordingSink()
    alerter = _alerter([sink], max_per_minute=3, clock=clock)
    for index in range(3):
        assert alerter.send(alert(f"k{index}"))
        clock.now += 10  # deliveries at 0, 10, 20 s
    with caplog.at_level(logging.ERROR, logger="qcompile.alerts"):
        assert not alerter.send(alert("k3", severity="critical"))
    assert "rate limit" in caplog.text
    assert alerter.suppressed == {"k3": 1}
    clock.now = 1000.0 + 60  # the first delivery left the window
    assert alerter.send(alert("k3"))
    assert not alerter.send(alert("k4"))
    assert alerter.flush()
    alerter.close()
    assert [a.key for a in sink.alerts] == ["k0", "k1", "k2", "k3"]
    assert sink.alerts[-1].suppressed == 1


def test_a_failing_sink_does_not_stop_the_others() -> None:
    class Broken:
        name = "broken"

        def deliver(self, alert: Alert) -> None:
            raise RuntimeError("boom")

    sink = RecordingSink()
    alerter = _alerter([Broken(), sink], retries=1)
    alerter.send(alert())
    assert alerter.flush()
    alerter.close()
    assert alerter.failures == [("broken", "feed.disconnected", "RuntimeError: boom")]
    assert alerter.delivered == [("recorder", "feed.disconnected")]


def test_alert_needs_a_known_severity_and_an_aware_time() -> None:
    with pytest.raises(ValueError, match="severity"):
        alert(severity="fatal")
    with pytest.raises(ValueError, match="timezone-aware"):
        alert(at=datetime(2026, 1, 1))
    assert Alert("k", "info", "s", "STR-1").at.tzinfo is not None


# -- configuration and secrets --------------------------------------------------------------------


def test_build_sinks_resolves_references(http_receiver: HttpReceiver, smtp_sink: SmtpSink) -> None:
    env = {"SLACK_WEBHOOK_URL": http_receiver.url}
    sinks = build_sinks(
        [
            {"kind": "log"},
            {"kind": "webhook", "url": "${oc.env:SLACK_WEBHOOK_URL}"},
            {
                "kind": "email",
                "to": ["ops@example.com"],
                "smtp_host": smtp_sink.host,
                "smtp_port": smtp_sink.port,
            },
        ],
        env=env,
    )
    assert [s.name for s in sinks] == ["log", "webhook", "email"]
    alerter = _alerter(sinks)
    alerter.send(alert())
    assert alerter.flush()
    alerter.close()
    assert len(http_receiver.bodies) == 1 and len(smtp_sink.messages) == 1
    assert alerter.failures == []


def test_build_sinks_refuses_secrets_written_into_config(http_receiver: HttpReceiver) -> None:
    with pytest.raises(AlertConfigError) as caught:
        build_sinks([{"kind": "webhook", "url": http_receiver.url}], env={})
    assert HOOK_TOKEN not in str(caught.value) and "reference" in str(caught.value)
    with pytest.raises(SecretError, match="SLACK_WEBHOOK_URL is not set"):
        build_sinks([{"kind": "webhook", "url": "${oc.env:SLACK_WEBHOOK_URL}"}], env={})
    with pytest.raises(AlertConfigError, match="unknown key"):
        build_sinks([{"kind": "email", "to": ["a@b"], "smtp_host": "h", "smpt_port": 25}])
    with pytest.raises(AlertConfigError, match="kind"):
        build_sinks([{"kind": "pager"}])


def test_no_secret_reaches_a_log_record_or_an_error(
    http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api_key = "tk_live_0123456789abcdef"
    closed = f"http://127.0.0.1:{free_port()}/services/T0000/B0000/{HOOK_TOKEN}"
    env = {"SLACK_WEBHOOK_URL": http_receiver.url, "DEAD_HOOK": closed, "SMTP_PASSWORD": api_key}
    http_receiver.statuses_to_return = [500, 500, 403]
    sinks = build_sinks(
        [
            {"kind": "webhook", "url": "${oc.env:SLACK_WEBHOOK_URL}", "name": "slack"},
            {"kind": "webhook", "url": "${oc.env:DEAD_HOOK}"},
            {
                "kind": "email",
                "to": ["ops@x"],
                "smtp_host": "127.0.0.1",
                "smtp_port": free_port(),  # nothing listens: connection refused
                "username": "runner",
                "password": "${oc.env:SMTP_PASSWORD}",
            },
            {"kind": "log"},
        ],
        env=env,
    )
    alerter = _alerter(sinks, retries=2)
    alerter.send(alert(details={"source": "tickdb"}))
    assert alerter.flush(10)
    alerter.close()
    assert {f[0] for f in alerter.failures} == {"slack", "webhook", "email"}
    assert ("log", "feed.disconnected") in alerter.delivered
    texts = [r.getMessage() for r in caplog.records] + [caplog.text]
    texts += [" ".join(failure) for failure in alerter.failures]
    texts += [repr(s.__dict__.get("name")) for s in sinks]
    for text in texts:
        assert HOOK_TOKEN not in text and api_key not in text
        assert "/services/" not in text
