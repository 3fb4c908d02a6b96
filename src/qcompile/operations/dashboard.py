"""`qcompile dashboard`: a read-only local web page over the runners' state stores.

For every strategy with a ``generated/<id>/params.yaml`` it shows what the runner last persisted:
positions, cash and marked equity, daily PnL from the journal, pending orders, the signal cursor,
the suspended flag and the heartbeat's age. It opens each strategy's store exactly as the runner
does but only reads (state, heartbeat, journal): it never takes the lease, so watching a strategy
can never stop it from trading or starting.

The page is one HTML document with inline CSS and JavaScript (no external assets: it works
offline and leaks nothing to a CDN) that polls ``/api/strategies`` and renders every value with
``textContent``: strategy names, symbols and error messages come from files and are never parsed
as HTML.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from qcompile.errors import QcompileError
from qcompile.runtime.state import StateStore, open_store

log = logging.getLogger("qcompile.live.dashboard")

DEFAULT_PORT = 8780
DEFAULT_HOST = "127.0.0.1"
PNL_HISTORY_DAYS = 10
STALE_HEARTBEATS = 2  # a heartbeat older than this many intervals means the runner is down


class DashboardError(QcompileError):
    """The dashboard cannot start (unknown strategy, port in use, ...)."""


def _utc(ms: float | int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: Any) -> float | None:
    """A finite float, or None for anything a corrupt or foreign record might hold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def strategy_ids(root: Path) -> list[str]:
    """Every strategy built into ``root/generated``: what could be deployed from this checkout."""
    generated = Path(root) / "generated"
    if not generated.is_dir():
        return []
    return sorted(p.parent.name for p in generated.glob("*/params.yaml") if p.is_file())


def daily_pnl(
    journal: Iterable[Mapping[str, Any]], initial_capital: float | None
) -> dict[str, Any] | None:
    """The last day's equity change and a short history, from the journal's ``daily`` records.

    Intraday strategies journal one record per completed interval, each with its date: the last
    record of a date is that day's closing equity. The first day is measured against the initial
    capital, which is what the paper broker starts with.
    """
    closing: dict[str, float] = {}
    for record in journal:
        equity = _number(record.get("equity"))
        if (
            record.get("type") == "daily"
            and isinstance(record.get("date"), str)
            and equity is not None
        ):
            closing.pop(record["date"], None)  # re-insert: dict order follows the last record
            closing[record["date"]] = equity
    if not closing:
        return None
    days, previous = [], initial_capital
    for date, equity in closing.items():
        change = None if previous is None else equity - previous
        pct = None if change is None or not previous else 100.0 * change / previous
        days.append({"date": date, "equity": equity, "change": change, "change_pct": pct})
        previous = equity
    return {**days[-1], "history": days[-PNL_HISTORY_DAYS:]}


def _last_fill_prices(journal: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for record in journal:
        price = _number(record.get("price"))
        if record.get("type") == "fill" and isinstance(record.get("symbol"), str) and price:
            prices[record["symbol"]] = price
    return prices


def heartbeat_summary(
    beat: Mapping[str, Any] | None, interval_s: float, now: datetime
) -> dict[str, Any]:
    """Age of the runner's last heartbeat and whether that means it is up."""
    summary: dict[str, Any] = {"interval_s": interval_s, "age_s": None, "status": "down"}
    if not beat:
        return summary
    try:
        at = datetime.fromisoformat(str(beat.get("at")))
    except ValueError:
        return summary
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # the runner writes UTC; be lenient with a bare stamp
    age = max(0.0, (now - at).total_seconds())
    if age > STALE_HEARTBEATS * interval_s:
        status = "down"
    else:
        status = "up" if beat.get("connected") else "disconnected"
    keep = ("host", "pid", "instance", "connected", "seq", "strategy_version", "signal")
    summary.update({k: beat.get(k) for k in keep})
    summary.update(
        at=at.astimezone(UTC).isoformat(timespec="seconds"),
        age_s=round(age, 1),
        status=status,
        last_message_age_s=_number(beat.get("last_message_age_s")),
    )
    return summary


def describe(
    strategy_id: str,
    params: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    beat: Mapping[str, Any] | None,
    journal: list[dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """One strategy's panel, as plain JSON data: the page only formats it."""
    deployment = params.get("deployment") or {}
    backtest = params.get("backtest") or {}
    info: dict[str, Any] = {
        "id": strategy_id,
        "name": (params.get("strategy") or {}).get("name"),
        "version": (params.get("strategy") or {}).get("version"),
        "heartbeat": heartbeat_summary(
            beat, float(deployment.get("heartbeat_interval_s") or 30), now
        ),
        "pnl": daily_pnl(journal, _number(backtest.get("initial_capital"))),
        "has_state": state is not None,
        "error": None,
    }
    if state is None:
        return info
    # The bar being built holds the last traded price per symbol (index 4: its close so far);
    # a fill price stands in for a symbol with no bar yet, e.g. just after a restart.
    prices = _last_fill_prices(journal)
    for symbol, bar in (state.get("building") or {}).items():
        if isinstance(bar, list) and len(bar) > 4 and _number(bar[4]):
            prices[symbol] = float(bar[4])
    cash = _number(state.get("cash"))
    positions, unpriced, held = [], [], 0.0
    for symbol, quantity in sorted((state.get("positions") or {}).items()):
        price = prices.get(symbol)
        value = None if price is None or _number(quantity) is None else quantity * price
        if value is None:
            unpriced.append(symbol)
        else:
            held += value
        positions.append({"symbol": symbol, "quantity": quantity, "price": price, "value": value})
    orders = [
        {**order, "submitted": _utc(_number(order.get("submitted_ms")))}
        for order in state.get("pending_orders") or []
        if isinstance(order, dict)
    ]
    cursor = [
        {"symbol": symbol, "ms": ms, "utc": _utc(_number(ms))}
        for symbol, ms in sorted((state.get("cursor") or {}).items())
    ]
    equity = None if cash is None or unpriced else cash + held
    last_close = (info["pnl"] or {}).get("equity")
    info.update(
        seq=state.get("seq"),
        cash=cash,
        equity=equity,
        unpriced=unpriced,
        since_close=None if equity is None or last_close is None else equity - last_close,
        positions=positions,
        pending_orders=orders,
        cursor=cursor,
        suspended=bool(state.get("suspended")),
        suspended_reason=state.get("suspended_reason") or "",
    )
    return info


class Dashboard:
    """Reads the state stores of a project's strategies; safe to call from many threads."""

    def __init__(
        self,
        root: Path,
        only: Iterable[str] = (),
        env: Mapping[str, str] = os.environ,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.root = Path(root)
        self.only = tuple(only)
        self.env = env
        self.clock = clock
        known = strategy_ids(self.root)
        missing = [s for s in self.only if s not in known]
        if missing:
            raise DashboardError(
                f"no generated/<id>/params.yaml for {', '.join(missing)} under {self.root} "
                f"(built: {', '.join(known) or 'none'}); run `qcompile build` first"
            )
        self.instance_id = f"dashboard-{socket.gethostname()}-{os.getpid()}"
        self._stores: dict[str, tuple[str, StateStore]] = {}  # id -> (store spec, store)
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}  # the last problem logged per strategy

    def strategy_ids(self) -> list[str]:
        return list(self.only) if self.only else strategy_ids(self.root)

    def _store(self, strategy_id: str, spec: Mapping[str, Any]) -> StateStore:
        # Kept open between refreshes (a Redis store holds a connection pool); reopened when
        # a rebuild changed the store's configuration.
        key = json.dumps(spec, sort_keys=True, default=str)
        with self._lock:
            cached = self._stores.get(strategy_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            store = open_store(spec, strategy_id, self.instance_id, self.root, self.env)
            self._stores[strategy_id] = (key, store)
        if cached is not None:
            cached[1].close()
        return store

    def strategy(self, strategy_id: str) -> dict[str, Any]:
        """One strategy's panel; a problem reading it becomes its ``error``, never a failure of
        the whole page (one unreachable Redis must not hide every other strategy)."""
        now = self.clock()
        params_file = self.root / "generated" / strategy_id / "params.yaml"
        try:
            params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
            spec = (params.get("deployment") or {}).get("state_store")
            if not isinstance(spec, dict):
                raise DashboardError(f"{params_file}: no deployment.state_store")
            store = self._store(strategy_id, spec)
            state, beat, journal = store.load(), store.read_heartbeat(), store.read_journal()
            info = describe(strategy_id, params, state, beat, journal, now)
            info["store"] = store.location
            self._errors.pop(strategy_id, None)
            return info
        except (OSError, yaml.YAMLError, QcompileError) as error:
            if self._errors.get(strategy_id) != str(error):  # once, not at every refresh
                log.warning("%s: %s", strategy_id, error)
            self._errors[strategy_id] = str(error)
            return {
                "id": strategy_id,
                "error": str(error),
                "heartbeat": heartbeat_summary(None, 0.0, now),
                "has_state": False,
            }

    def snapshot(self) -> dict[str, Any]:
        return {
            "generated_at": self.clock().isoformat(timespec="seconds"),
            "strategies": [self.strategy(s) for s in self.strategy_ids()],
        }

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for _, store in stores:
            store.close()


# --------------------------------------------------------------------------------------------
# The page

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2430;background:#f6f7f9}
h1{font-size:1.2rem;margin:0 0 .3rem}
#meta{color:#667;margin-bottom:1rem}
#error{color:#a40000;font-weight:600}
section{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:.8rem 1rem;
margin-bottom:1rem}
h2{font-size:1.05rem;margin:0 0 .4rem}
h3{font-size:.9rem;margin:.8rem 0 .2rem;color:#445}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:.15rem .7rem .15rem 0;text-align:right}
td:first-child,th:first-child{text-align:left}
.facts span{margin-right:1.2rem}
.badge{display:inline-block;padding:0 .45rem;border-radius:3px;color:#fff;font-size:.8rem}
.up{background:#1a7f37}.down{background:#b42318}.disconnected,.suspended{background:#b54708}
.neg{color:#b42318}.pos{color:#1a7f37}.muted{color:#889}.err{color:#a40000}
"""

_SCRIPT = """
"use strict";
const REFRESH_MS = Number(document.body.dataset.refreshMs) || 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function num(value, digits, signed) {
  if (value === null || value === undefined) return "\\u2014";
  const text = Number(value).toLocaleString("en-US", {
    minimumFractionDigits: digits === 4 ? 0 : digits, maximumFractionDigits: digits});
  return signed && value > 0 ? "+" + text : text;
}
function tone(value) { return value > 0 ? "pos" : value < 0 ? "neg" : ""; }
function fact(label, field, text, cls) {
  return el("span", {}, label + ": ",
            el("b", {"data-field": field, "class": cls || ""}, text));
}
function table(headers, rows) {
  const head = el("tr", {}, ...headers.map(h => el("th", {}, h)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function panel(s) {
  const hb = s.heartbeat || {};
  const box = el("section", {"data-strategy": s.id});
  box.append(el("h2", {}, s.id + (s.name ? " \\u2014 " + s.name : "") +
                (s.version ? " v" + s.version : "") + " "),
             el("div", {"class": "facts"},
                el("span", {"class": "badge " + hb.status, "data-field": "status"}, hb.status),
                " ",
                fact("heartbeat age", "heartbeat-age",
                     hb.age_s === null || hb.age_s === undefined ? "none" : num(hb.age_s, 1) + " s"),
                s.seq !== undefined ? fact("state seq", "seq", String(s.seq)) : ""));
  if (s.error) {
    box.append(el("p", {"class": "err", "data-field": "error"}, s.error));
    return box;
  }
  const pnl = s.pnl || {};
  box.append(el("div", {"class": "facts"},
    fact("day", "pnl-date", pnl.date || "\\u2014"),
    fact("daily PnL", "pnl-day", num(pnl.change, 2, true), tone(pnl.change)),
    fact("since close", "pnl-since-close", num(s.since_close, 2, true), tone(s.since_close)),
    fact("open orders", "open-orders", String((s.pending_orders || []).length))));
  if (!s.has_state) {
    box.append(el("p", {"class": "muted"}, "no persisted state yet"));
    return box;
  }
  box.append(el("div", {"class": "facts"},
    fact("cash", "cash", num(s.cash, 2)),
    fact("equity", "equity", s.equity === null ? "unpriced: " + s.unpriced.join(", ")
                                                 : num(s.equity, 2)),
    s.suspended ? el("span", {"class": "badge suspended", "data-field": "suspended"},
                     "suspended: " + s.suspended_reason)
                : el("span", {"data-field": "suspended"}, "signals active")));
  box.append(el("h3", {}, "Positions"), s.positions.length === 0
    ? el("p", {"class": "muted"}, "flat")
    : table(["symbol", "quantity", "last price", "value"], s.positions.map(p =>
        el("tr", {"data-symbol": p.symbol}, el("td", {}, p.symbol),
           el("td", {"data-field": "quantity"}, num(p.quantity, 4)),
           el("td", {}, num(p.price, 2)), el("td", {}, num(p.value, 2))))));
  if (s.pending_orders.length) {
    box.append(el("h3", {}, "Open orders"),
      table(["order", "symbol", "quantity", "submitted (bar)"], s.pending_orders.map(o =>
        el("tr", {}, el("td", {}, o.id), el("td", {}, o.symbol),
           el("td", {}, num(o.quantity, 4)), el("td", {}, o.submitted || "\\u2014")))));
  }
  box.append(el("h3", {}, "Signal cursor"),
    table(["symbol", "last timestamp"], s.cursor.map(c =>
      el("tr", {"data-symbol": c.symbol}, el("td", {}, c.symbol),
         el("td", {"data-field": "cursor"}, c.utc || "")))));
  if (pnl.history && pnl.history.length) {
    box.append(el("h3", {}, "Daily PnL"),
      table(["date", "equity", "change", "%"], pnl.history.slice().reverse().map(d =>
        el("tr", {}, el("td", {}, d.date), el("td", {}, num(d.equity, 2)),
           el("td", {"class": tone(d.change)}, num(d.change, 2, true)),
           el("td", {"class": tone(d.change)}, num(d.change_pct, 2, true))))));
  }
  return box;
}

async function refresh() {
  try {
    const response = await fetch("/api/strategies", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    document.getElementById("panels").replaceChildren(...data.strategies.map(panel));
    document.getElementById("meta").textContent =
      data.strategies.length + " strategies, read at " + data.generated_at;
    document.getElementById("error").textContent = "";
  } catch (error) {
    document.getElementById("error").textContent =
      "cannot read the dashboard server (" + error.message + "); showing the last data";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
"""


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


# Only this page's own inline script and style may run, and it may only talk to this server.
_CSP = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page(refresh_s: float) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>qcompile dashboard</title>"
        f"<style>{_STYLE}</style></head>"
        f'<body data-refresh-ms="{int(refresh_s * 1000)}"><h1>qcompile dashboard</h1>'
        '<div id="meta">loading\u2026</div><div id="error"></div><main id="panels"></main>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# The server


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "qcompile-dashboard"

    def do_GET(self) -> None:
        if not self.server.host_allowed(self.headers.get("Host", "")):
            # A page on another site could resolve its own name to 127.0.0.1 (DNS rebinding)
            # and read the positions; a loopback server only answers its loopback names.
            self._send(HTTPStatus.FORBIDDEN, "text/plain", b"unexpected Host header\n")
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            body = page(self.server.refresh_s).encode("utf-8")
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", body)
        elif path == "/api/strategies":
            snapshot = self.server.dashboard.snapshot()
            body = json.dumps(snapshot, default=str, allow_nan=False).encode("utf-8")
            self._send(HTTPStatus.OK, "application/json", body)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server; ``port=0`` picks a free port (see :attr:`url`)."""

    daemon_threads = True

    def __init__(self, dashboard: Dashboard, host: str, port: int, refresh_s: float) -> None:
        self.dashboard = dashboard
        self.refresh_s = refresh_s
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host.strip("[]"), port), _Handler)
        except OSError as error:
            dashboard.close()
            raise DashboardError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        self.loopback = _is_loopback(host)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"

    def host_allowed(self, header: str) -> bool:
        if not self.loopback:
            return True  # bound to a routable address on purpose: any name may point at it
        name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
        return _is_loopback(name)

    def server_close(self) -> None:
        super().server_close()
        self.dashboard.close()


def make_server(
    root: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    only: Iterable[str] = (),
    refresh_s: float = 2.0,
    env: Mapping[str, str] = os.environ,
) -> DashboardServer:
    """A bound, not yet serving, dashboard server for the project at ``root``."""
    if refresh_s <= 0:
        raise DashboardError(f"refresh must be positive, got {refresh_s}")
    return DashboardServer(Dashboard(root, only, env), host, port, refresh_s)


def serve(
    root: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    only: Iterable[str] = (),
    refresh_s: float = 2.0,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the dashboard until Ctrl-C; ``announce`` receives the URL and any warning."""
    server = make_server(root, host=host, port=port, only=only, refresh_s=refresh_s)
    if not server.loopback:
        announce(
            f"warning: listening on {host}, not loopback: anyone who can reach this port sees "
            "every strategy's positions (there is no authentication)"
        )
    announce(f"dashboard: {server.url} (refreshes every {refresh_s:g} s; Ctrl-C stops)")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(OSError):
            server.server_close()
