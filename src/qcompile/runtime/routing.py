"""Which broker a deployment routes orders to: ``deployment.broker`` read, the adapter made.

The SDKs (alpaca-py, ccxt) are imported only here and only for the broker named, so a research
install does not need them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from qcompile.runtime.broker import BrokerError, RemoteBroker
from qcompile.runtime.secrets import install_redaction, resolve


def broker_settings(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """``deployment.broker`` as a mapping: ``paper`` is short for ``{kind: paper}``."""
    value = deployment.get("broker", "paper")
    return {"kind": value} if isinstance(value, str) else dict(value)


def open_remote_broker(
    params: Mapping[str, Any],
    deployment: Mapping[str, Any],
    env: Mapping[str, str] = os.environ,
) -> RemoteBroker:
    """The adapter ``deployment.broker`` names for the strategy of ``params``, its credentials
    resolved from the environment (and masked in every log line from here on). BrokerError if
    it cannot be made: an SDK not installed, a credential missing, the broker unreachable."""
    settings = broker_settings(deployment)
    kind = settings["kind"]
    credentials = [
        resolve(settings.get(name), env, what=f"deployment.broker.{name}")
        for name in ("api_key", "secret")
    ]
    install_redaction([c for c in credentials if c])  # before anything could log them
    key, secret = credentials
    if not key or not secret:
        raise BrokerError(f"deployment.broker: {kind} needs api_key and secret references")
    symbols = list(params["universe"]["symbols"])
    fractional = bool((params["backtest"].get("sizing") or {}).get("fractional_shares", False))
    try:
        if kind == "alpaca":
            from qcompile.runtime.alpaca import AlpacaBroker

            return AlpacaBroker(
                key,
                secret,
                paper=settings.get("endpoint", "paper") == "paper",
                url=settings.get("url"),
                fractional=fractional,
            )
        if kind == "ccxt":
            from qcompile.runtime.exchange import CcxtBroker

            return CcxtBroker(
                str(settings["exchange"]),
                key,
                secret,
                symbols,
                url=settings.get("url"),
                sandbox=bool(settings.get("sandbox", False)),
            )
    except ImportError as missing:
        raise BrokerError(
            f"deployment.broker: {kind} needs its SDK: pip install 'qcompile[{kind}]' "
            f"({missing.name} is not installed)"
        ) from None
    raise BrokerError(f"deployment.broker.kind: unknown broker {kind!r}")
