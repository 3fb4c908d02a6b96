"""The feed's read-ahead socket: the same bytes in the same order as the socket's own reads,
what it holds reported as pending (so the feed never waits in select for bytes it has), and the
peer's close passed on."""

from __future__ import annotations

import random
import socket

from qcompile.runtime.feed import ReadAhead


def test_small_reads_get_every_byte_in_order_and_pending_counts_what_is_held() -> None:
    ours, theirs = socket.socketpair()
    reader = ReadAhead(ours)
    payload = bytes(random.Random(4).randrange(256) for _ in range(200_000))
    theirs.sendall(payload[:100_000])
    received = bytearray()
    rng = random.Random(5)
    while len(received) < 100_000:
        chunk = reader.recv(rng.choice([1, 2, 8, 126, 4096]))
        assert chunk
        received += chunk
        assert reader.pending() == 0 or len(received) < 100_000
    theirs.sendall(payload[100_000:])
    first = reader.recv(2)  # one read of up to 64 kB: the rest is held
    assert reader.pending() > 0
    received += first
    while len(received) < len(payload):
        received += reader.recv(rng.choice([2, 3, 70_000]))
    assert bytes(received) == payload and reader.pending() == 0
    theirs.close()
    assert reader.recv(10) == b""  # the peer closed: as the socket says it
    assert reader.fileno() == ours.fileno()  # everything else is the socket's own
    ours.close()
