"""The paper broker fills at the next quote with the strategy's cost model."""

from __future__ import annotations

import json

import pytest

from qcompile.runtime.broker import RECENT_FILLS, Order, PaperBroker

COSTS = {"slippage_bps": 10, "commission_per_share": 0.01, "min_commission": 1.0}


def test_a_buy_fills_at_the_next_quote_plus_slippage_and_commission() -> None:
    broker = PaperBroker(COSTS, 10_000.0)
    broker.submit(Order("o1", "MSFT", 50, 0))
    assert broker.on_quote("GOOGL", 100.0, 1) == []  # another symbol's quote fills nothing
    (fill,) = broker.on_quote("MSFT", 100.0, 2)
    assert fill.price == pytest.approx(100.1)  # 10 bps against the buyer
    assert fill.commission == 1.0  # 50 x 0.01 = 0.50, below the minimum per order
    assert broker.cash() == pytest.approx(10_000 - 50 * 100.1 - 1.0)
    assert broker.positions() == {"MSFT": 50}
    ledger = broker.ledger()  # what the runner saves inside its state
    assert ledger["positions"] == {"MSFT": 50} and ledger["working_orders"] == []


def test_a_sell_pays_slippage_the_other_way_and_flat_positions_disappear() -> None:
    broker = PaperBroker(COSTS, 0.0, ledger={"cash": 0.0, "positions": {"MSFT": 200}})
    broker.submit(Order("o2", "MSFT", -200, 0))
    (fill,) = broker.on_quote("MSFT", 50.0, 1)
    assert fill.price == pytest.approx(49.95)
    assert fill.commission == pytest.approx(2.0)
    assert broker.positions() == {}
    assert broker.cash() == pytest.approx(200 * 49.95 - 2.0)


def test_cancel_all_cancels_every_working_order_and_a_ledger_round_trips() -> None:
    broker = PaperBroker(COSTS, 1_000.0)
    broker.submit(Order("a", "MSFT", 1, 0))
    broker.submit(Order("b", "SPX", -1, 0))
    restored = PaperBroker(COSTS, 0.0, ledger=broker.ledger())
    assert [o.id for o in restored.working_orders()] == ["a", "b"]
    assert [o.id for o in broker.cancel_all()] == ["a", "b"]
    assert broker.working_orders() == [] and broker.on_quote("MSFT", 10.0, 1) == []


def test_an_order_id_is_sent_once_and_its_fill_is_known_by_sequence() -> None:
    broker = PaperBroker(COSTS, 10_000.0)
    assert broker.submit(Order("o1", "MSFT", 10, 0)) == []
    assert broker.submit(Order("o1", "MSFT", 10, 0)) == []  # still working: not queued twice
    (fill,) = broker.on_quote("MSFT", 100.0, 1)
    assert fill.seq == 1 and broker.positions() == {"MSFT": 10}
    # decided again after a restart: nothing is sent, the fill is what comes back
    assert broker.submit(Order("o1", "MSFT", 10, 0)) == [fill]
    assert broker.on_quote("MSFT", 101.0, 2) == [] and broker.positions() == {"MSFT": 10}
    broker.submit(Order("o2", "MSFT", -10, 2))
    (second,) = broker.on_quote("MSFT", 102.0, 3)
    assert broker.fills_after(0) == [fill, second] and broker.fills_after(1) == [second]
    restored = PaperBroker(COSTS, 0.0, ledger=broker.ledger())  # the sequence survives a restart
    assert restored.fills_after(1) == [second]
    assert restored.submit(Order("o2", "MSFT", -10, 2)) == [second]


def test_recent_fills_survive_a_sorted_save_in_fill_order_and_older_lists_still_load() -> None:
    """The ledger keys its recent fills by order id (a state's log line then holds only the new
    ones); the checkpoint sorts keys, so a restore puts them back in fill order, keeps the newest
    RECENT_FILLS, and still answers a repeated submit of a filled id with its fill."""
    broker = PaperBroker(COSTS, 1e9)
    for n in range(RECENT_FILLS + 10):
        broker.submit(Order(f"id-{(7 * n) % 1000:04d}-{n}", "MSFT", 1, n))
        broker.on_quote("MSFT", 10.0, n)
    saved = json.loads(json.dumps(broker.ledger(), sort_keys=True))
    restored = PaperBroker(COSTS, 0.0, ledger=saved)
    seqs = [fill.seq for fill in restored.fills_after(0)]
    assert seqs == sorted(seqs) and len(seqs) == RECENT_FILLS and seqs[-1] == RECENT_FILLS + 10
    last = restored.fills_after(seqs[-2])[0]
    assert restored.submit(Order(last.order_id, "MSFT", 1, 0)) == [last]
    older = {
        **saved,
        "recent_fills": sorted(saved["recent_fills"].values(), key=lambda f: f["seq"]),
    }
    assert PaperBroker(COSTS, 0.0, ledger=older).fills_after(0) == restored.fills_after(0)


def test_a_limit_order_waits_for_its_price_and_one_order_can_be_cancelled() -> None:
    broker = PaperBroker(COSTS, 10_000.0)
    broker.submit(Order("buy", "MSFT", 10, 0, limit_price=99.0))
    broker.submit(Order("sell", "GOOGL", -5, 0, limit_price=200.0))
    assert broker.on_quote("MSFT", 99.5, 1) == []  # above a buy's limit
    assert broker.on_quote("GOOGL", 199.0, 1) == []  # below a sell's limit
    (bought,) = broker.on_quote("MSFT", 98.0, 2)
    assert bought.order_id == "buy"
    assert broker.cancel(Order("sell", "GOOGL", -5, 0)) is True
    assert broker.cancel(Order("sell", "GOOGL", -5, 0)) is False
    assert broker.on_quote("GOOGL", 250.0, 3) == []  # cancelled: nothing fills
    market = broker.ledger()
    assert all("limit_price" not in o for o in market["working_orders"])
    broker.submit(Order("m", "MSFT", 1, 0))
    assert "limit_price" not in broker.ledger()["working_orders"][0]  # states as before
