"""Group commit: the decision thread hands over snapshots, one saver thread makes them durable.

A save is a durable write (a line of the state's log, about a third of a millisecond here, now
and then a whole checkpoint); made on the decision thread, it would be time during which no push
is decided. The saver thread saves while the decision thread goes on:
when several snapshots arrive during one save, only the newest is saved next (it contains the
others' effects), so the disk never falls behind the decisions. The journal records a cycle
made (fills, daily marks) come with its snapshot and are appended, all of them in one write,
just before the state that contains them is saved. A snapshot is *acknowledged*
when its save returned; ``seq`` numbers the saves, without gaps, so a restart after kill -9
finds either the last acknowledged state or the one whose save completed as the kill landed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from qcompile.errors import QcompileError
from qcompile.runtime.state import StateStore

log = logging.getLogger("qcompile.live")


class Saver:
    def __init__(
        self,
        store: StateStore,
        seq: int,
        on_saved: Callable[[dict[str, Any], int], None] = lambda state, ticket: None,
        on_error: Callable[[BaseException], None] = lambda error: None,
        journal: Callable[..., None] | None = None,
    ):
        self.store = store
        # journal(*records), one write; the runner's logs a failure instead of stopping
        self.journal = journal or store.append_journal
        self.seq = seq  # of the last durable save
        self.on_saved = on_saved
        self.on_error = on_error  # told at once: nobody may submit again to notice
        self._condition = threading.Condition()
        self._pending: tuple[dict[str, Any], int] | None = None
        self._records: list[dict[str, Any]] = []  # journal records not yet appended
        self._submitted = 0  # tickets: one per submitted snapshot
        self._saved = 0  # highest ticket whose content is durable
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="state-saver", daemon=True)
        self._thread.start()

    def submit(
        self, snapshot: dict[str, Any], wait: bool = False, records: list[dict[str, Any]] = ()
    ) -> int:
        """Queue ``snapshot`` for saving (replacing an unsaved older one) and ``records`` for
        the journal (kept, in order, whatever replaces the snapshot); with ``wait``, return only
        once it is durable. Returns its ticket."""
        with self._condition:
            self._raise_if_failed()
            self._submitted += 1
            ticket = self._submitted
            self._pending = (snapshot, ticket)
            self._records.extend(records)
            self._condition.notify_all()
            if wait:
                self._condition.wait_for(lambda: self._saved >= ticket or self._error is not None)
                self._raise_if_failed()
            return ticket

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending is not None or self._closing)
                if self._pending is None:
                    return
                snapshot, ticket = self._pending
                self._pending, records, self._records = None, self._records, []
            if records:
                self.journal(*records)
            state = {**snapshot, "seq": self.seq + 1}
            try:
                self.store.save(state)
            except BaseException as error:  # the runner must stop: nothing more can be acked
                with self._condition:
                    self._error = error
                    self._condition.notify_all()
                self.on_error(error)
                return
            self.seq += 1
            self.on_saved(state, ticket)
            with self._condition:
                self._saved = ticket
                self._condition.notify_all()
            try:
                self.store.prepare()  # while nothing waits: the next save has less to do
            except (OSError, QcompileError) as error:  # the next save tries again, and says
                log.debug("preparing the next save failed: %s", error)

    def close(self) -> None:
        """Save what is pending, then stop the thread."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout=30)
