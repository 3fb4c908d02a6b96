"""Durable state: atomic saves that survive kill -9, exclusive leases, fencing in Redis."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from qcompile.runtime import state as state_module
from qcompile.runtime.secrets import SecretError
from qcompile.runtime.state import (
    FileStateStore,
    LeaseError,
    RedisStateStore,
    StateError,
    atomic_write,
    open_store,
)
from tests.integration.conftest import free_port

STATE = {
    "seq": 7,
    "positions": {"BTCUSDT": 0.25, "ETHUSDT": -1.5},
    "pending": {"o-1": {"symbol": "BTCUSDT", "quantity": 0.1}},
    "cursor": {"BTCUSDT": 1767225600000},
    "note": "déjà vu",  # stored as UTF-8, not \\u escapes
}


@pytest.fixture
def file_store(tmp_path: Path):
    store = FileStateStore(tmp_path, "STR-2026-0051", "host-a-1")
    store.acquire()
    yield store
    store.close()


# -- file store: format and atomicity ------------------------------------------------------------


def test_file_round_trip_in_canonical_json(file_store: FileStateStore, tmp_path: Path) -> None:
    assert file_store.load() is None
    file_store.save(STATE)
    assert file_store.load() == STATE
    raw = (tmp_path / "STR-2026-0051" / "state.json").read_bytes()
    expected = json.dumps(STATE, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert raw == expected.encode("utf-8")
    file_store.save({**STATE, "seq": 8})
    assert file_store.load()["seq"] == 8
    assert json.loads(raw)["seq"] == 7  # the checkpoint; the change to 8 is in the log
    assert sorted(os.listdir(tmp_path / "STR-2026-0051")) == [
        "journal.jsonl",
        "lease",
        "state.json",
        "state.log",
    ]


def test_a_state_directory_moved_away_is_an_error_not_a_save_nobody_reads(
    file_store: FileStateStore, tmp_path: Path
) -> None:
    file_store.save(STATE)
    (tmp_path / "STR-2026-0051").rename(tmp_path / "moved")
    with pytest.raises(StateError, match="the state directory is gone"):
        file_store.save({**STATE, "seq": 8})  # through the old descriptor it would "succeed"
    (tmp_path / "STR-2026-0051").mkdir()  # a new directory in its place: not the one we hold
    with pytest.raises(StateError, match="moved or replaced while running"):
        file_store.save({**STATE, "seq": 9})
    assert json.loads((tmp_path / "moved" / "state.json").read_text())["seq"] == 7


def test_a_truncated_state_file_is_an_error_naming_the_path(
    file_store: FileStateStore, tmp_path: Path
) -> None:
    file_store.save(STATE)
    path = tmp_path / "STR-2026-0051" / "state.json"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(StateError, match="corrupt or truncated") as caught:
        file_store.load()
    assert str(path) in str(caught.value)
    path.write_bytes(b"")
    with pytest.raises(StateError, match=str(path)):
        file_store.load()


def test_unserialisable_state_is_refused_and_the_old_state_kept(
    file_store: FileStateStore,
) -> None:
    file_store.save(STATE)
    with pytest.raises(StateError, match="not JSON"):
        file_store.save({"seq": 8, "price": float("nan")})
    assert file_store.load() == STATE


@pytest.mark.parametrize("prepared", [False, True])
def test_save_order_is_durable_write_then_rename_then_fsync_directory(
    file_store: FileStateStore, monkeypatch: pytest.MonkeyPatch, prepared: bool
) -> None:
    """The temporary file is opened with O_DSYNC (each write returns durable: the file's fsync),
    written whole, renamed over the state, then the directory is synced; whether the saver
    prepared the file ahead (after the last acknowledgement) or the save opens it."""
    calls: list[str] = []
    real_open, real_write = os.open, os.write
    real_fsync, real_replace = os.fsync, os.replace
    temp = f"state.json.tmp-{os.getpid()}"

    def open_(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if str(path) == temp:
            calls.append(f"open({temp}, {'O_DSYNC' if flags & os.O_DSYNC else 'no sync'})")
            temps.add(fd)
        return fd

    def write(fd: int, data) -> int:
        if fd in temps:
            calls.append("write(temp)")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        calls.append("fsync(dir)" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync(file)")
        real_fsync(fd)

    def replace(src, dst, **kwargs) -> None:
        calls.append(f"replace({src} -> {dst})")
        real_replace(src, dst, **kwargs)

    temps: set[int] = set()
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if prepared:
        file_store.prepare()
    file_store.save(STATE)
    assert calls == [
        f"open({temp}, O_DSYNC)",
        "write(temp)",
        f"replace({temp} -> state.json)",
        "fsync(dir)",
        "fsync(file)",  # the log, emptied and allocated for the lines that follow
    ]
    assert json.loads((file_store.path / "state.json").read_text()) == STATE


def _book(seq: int, changed: str) -> dict:
    rows = {f"S{i:03d}": [float(i), 1.0] for i in range(50)}
    return {"seq": seq, "building": {**rows, changed: [float(seq), 2.0]}, "cash": 10.0 * seq}


def test_saves_after_the_checkpoint_are_one_durable_line_each(
    file_store: FileStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first save writes the checkpoint; each later one appends what changed to state.log
    in one write (opened with O_DSYNC: durable on return), no rename, no fsync; a fresh reader
    gets the last state saved."""
    file_store.save(_book(1, "S001"))
    log_path = file_store.path / "state.log"
    assert log_path.read_bytes().rstrip(b"\0") == b""  # allocated, nothing written yet
    calls: list[str] = []
    real_write, real_fsync, real_replace = os.pwrite, os.fsync, os.replace
    monkeypatch.setattr(
        os, "pwrite", lambda fd, data, at: (calls.append("write"), real_write(fd, data, at))[1]
    )
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda *a, **k: (calls.append("replace"), real_replace(*a, **k))[1]
    )
    for seq in range(2, 6):
        file_store.save(_book(seq, f"S{seq:03d}"))
    assert calls == ["write"] * 4
    assert fcntl.fcntl(file_store._log_fd, fcntl.F_GETFL) & os.O_DSYNC == os.O_DSYNC
    lines = log_path.read_bytes().rstrip(b"\0").splitlines()
    assert len(lines) == 4 and all(len(line) < 200 for line in lines)  # the changed row only
    assert json.loads((file_store.path / "state.json").read_text())["seq"] == 1
    reader = FileStateStore(file_store.path.parent, "STR-2026-0051", "reader")
    assert reader.load() == _book(5, "S005")


def test_a_restart_and_a_long_log_start_from_a_new_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStateStore(tmp_path, "STR-1", "a")
    store.acquire()
    for seq in range(1, 4):
        store.save(_book(seq, "S002"))
    assert (tmp_path / "STR-1" / "state.log").read_bytes().rstrip(b"\0")
    store.close()  # an orderly stop folds the log into state.json
    assert json.loads((tmp_path / "STR-1" / "state.json").read_text()) == _book(3, "S002")
    assert (tmp_path / "STR-1" / "state.log").read_bytes().rstrip(b"\0") == b""
    restarted = FileStateStore(tmp_path, "STR-1", "b")
    restarted.acquire()
    assert restarted.load() == _book(3, "S002")
    restarted.save(_book(4, "S003"))  # the run's first save: a checkpoint, the log emptied
    assert json.loads((tmp_path / "STR-1" / "state.json").read_text()) == _book(4, "S003")
    assert (tmp_path / "STR-1" / "state.log").read_bytes().rstrip(b"\0") == b""
    monkeypatch.setattr(state_module, "CHECKPOINT_LOG_BYTES", 300)
    for seq in range(5, 12):
        restarted.save(_book(seq, f"S{seq:03d}"))
        assert len((tmp_path / "STR-1" / "state.log").read_bytes().rstrip(b"\0")) <= 300
    assert json.loads((tmp_path / "STR-1" / "state.json").read_text())["seq"] > 4
    assert restarted.load() == _book(11, "S011")
    restarted.close()


def test_a_torn_log_tail_is_dropped_and_a_damaged_log_refused(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path, "STR-1", "a")
    store.acquire()
    for seq in range(1, 5):
        store.save(_book(seq, "S009"))
    # the writer still runs (or was killed): its log is what a reader replays
    log_path = tmp_path / "STR-1" / "state.log"
    intact = log_path.read_bytes().rstrip(b"\0")
    log_path.write_bytes(intact[:-9])  # the last save's line torn: that save never returned
    assert FileStateStore(tmp_path, "STR-1", "b").load() == _book(3, "S009")
    log_path.write_bytes(intact[:-9] + bytes(4096))  # torn, then the allocated space's zeros
    assert FileStateStore(tmp_path, "STR-1", "b").load() == _book(3, "S009")
    last = intact.splitlines(keepends=True)[-1]
    middle_lost = last[:20] + bytes(len(last) - 30) + last[-10:]  # its first and last sectors
    log_path.write_bytes(intact[: -len(last)] + middle_lost + bytes(4096))
    assert FileStateStore(tmp_path, "STR-1", "b").load() == _book(3, "S009")
    lines = intact.splitlines(keepends=True)
    log_path.write_bytes(lines[0] + lines[1].replace(b"S009", b"S00X") + lines[2])
    with pytest.raises(StateError, match=r"state.log:2: checksum does not match"):
        FileStateStore(tmp_path, "STR-1", "b").load()
    log_path.write_bytes(lines[0] + lines[2])
    with pytest.raises(StateError, match=r"state.log:2: save 4 follows save 2"):
        FileStateStore(tmp_path, "STR-1", "b").load()
    (tmp_path / "STR-1" / "state.json").unlink()
    with pytest.raises(StateError, match="state log without its checkpoint"):
        FileStateStore(tmp_path, "STR-1", "b").load()
    store.close()


def test_writing_needs_the_lease(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path, "STR-1", "a")
    with pytest.raises(StateError, match="acquire"):
        store.save(STATE)
    assert store.load() is None  # reading does not need it (monitoring, post-mortems)


# -- file store: a real crash ---------------------------------------------------------------------

CRASHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qcompile.runtime.state import FileStateStore

    store = FileStateStore(Path(sys.argv[1]), "STR-1", "crasher")
    store.acquire()
    seq = (store.load() or {"seq": 0})["seq"]
    book = {f"SYM{i:03d}": i * 1.25 for i in range(120)}
    while True:
        seq += 1
        store.save({"seq": seq, "positions": book, "cursor": {"SYM000": seq * 60_000}})
        sys.stdout.write(f"{seq}\\n")
        sys.stdout.flush()
    """
)


def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20260101)
    for _kill in range(7):
        with (tmp_path / "stderr.txt").open("wb") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-c", CRASHER, str(tmp_path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert child.stdout is not None
        first = child.stdout.readline()  # in the save loop now
        assert first, (tmp_path / "stderr.txt").read_text()
        time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()  # whatever it printed before dying
        child.wait()
        child.stdout.close()
        printed = [int(line) for line in (first + rest).split(b"\n") if line.strip()]
        acknowledged = printed[-1]

        # the kernel dropped the dead holder's flock: a restart takes over at once
        store = FileStateStore(tmp_path, "STR-1", "restart")
        store.acquire()
        state = store.load()
        assert state is not None
        assert state["seq"] in (acknowledged, acknowledged + 1), (acknowledged, state["seq"])
        assert state["cursor"] == {"SYM000": state["seq"] * 60_000}
        assert len(state["positions"]) == 120
        assert not [n for n in os.listdir(tmp_path / "STR-1") if ".tmp-" in n]  # cleaned
        store.close()


# -- file store: lease ----------------------------------------------------------------------------


def test_a_second_file_store_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    first = FileStateStore(tmp_path, "STR-1", "host-a-1")
    second = FileStateStore(tmp_path, "STR-1", "host-b-2")
    first.acquire()
    with pytest.raises(LeaseError) as caught:
        second.acquire()
    message = str(caught.value)
    assert "instance host-a-1" in message and f"pid {os.getpid()}" in message
    assert "since 20" in message and "+00:00" in message  # an aware UTC timestamp
    first.release()
    first.release()  # idempotent
    second.acquire()
    second.save(STATE)
    with pytest.raises(StateError):
        first.save(STATE)  # released: no more writing
    second.close()


def test_acquire_removes_stale_temporary_files(tmp_path: Path) -> None:
    directory = tmp_path / "STR-1"
    directory.mkdir()
    (directory / "state.json.tmp-99999").write_bytes(b'{"seq":')
    (directory / "paper-broker.json.tmp-123").write_bytes(b"{")
    (directory / "notes.tmp-draft").write_bytes(b"kept: not one of ours")
    store = FileStateStore(tmp_path, "STR-1", "a")
    store.acquire()
    assert sorted(os.listdir(directory)) == ["journal.jsonl", "lease", "notes.tmp-draft"]
    store.close()


def test_atomic_write_replaces_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ledger.json"
    target.write_bytes(b"old")
    synced: list[bool] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd))
    )
    atomic_write(target, b'{"cash":1}')
    assert target.read_bytes() == b'{"cash":1}'
    assert synced == [False, True]  # the file, then its directory
    assert os.listdir(tmp_path) == ["ledger.json"]
    with pytest.raises(StateError, match="could not write"):
        atomic_write(tmp_path / "missing-dir" / "x.json", b"{}")


def test_file_heartbeat(file_store: FileStateStore) -> None:
    assert file_store.read_heartbeat() is None
    file_store.heartbeat({"cycle": 12, "feed": "connected"})
    beat = file_store.read_heartbeat()
    assert beat is not None
    assert beat["cycle"] == 12 and beat["instance_id"] == "host-a-1"
    assert beat["heartbeat_at"].endswith("+00:00")


def test_a_strategy_id_cannot_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        FileStateStore(tmp_path, "../elsewhere", "a")


# -- Redis store ----------------------------------------------------------------------------------


def test_redis_round_trip(redis_url: str) -> None:
    store = RedisStateStore(redis_url, "STR-1", "a")
    store.acquire()
    assert store.load() is None
    store.save(STATE)
    assert store.load() == STATE
    raw = redis.Redis.from_url(redis_url).get("qcompile:STR-1:state")
    assert raw == json.dumps(
        STATE, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    store.heartbeat({"cycle": 3})
    assert store.read_heartbeat()["cycle"] == 3
    store.close()


def test_redis_lease_is_exclusive_and_released_only_by_its_holder(redis_url: str) -> None:
    a = RedisStateStore(redis_url, "STR-1", "host-a-1")
    b = RedisStateStore(redis_url, "STR-1", "host-b-2")
    a.acquire()
    with pytest.raises(LeaseError) as caught:
        b.acquire()
    assert "instance host-a-1" in str(caught.value) and "since 20" in str(caught.value)
    b.release()  # never held: must not delete a's lease
    with pytest.raises(LeaseError):
        b.acquire()
    a.release()
    b.acquire()
    b.save(STATE)
    b.close()


def test_redis_lease_is_renewed_while_the_holder_lives(redis_url: str) -> None:
    a = RedisStateStore(redis_url, "STR-1", "a", lease_ttl_s=0.3)
    b = RedisStateStore(redis_url, "STR-1", "b", lease_ttl_s=0.3)
    a.acquire()
    deadline = time.monotonic() + 1.0  # more than three ttls
    while time.monotonic() < deadline:
        with pytest.raises(LeaseError):
            b.acquire()
        time.sleep(0.05)
    a.save(STATE)
    a.close()


def _wait_until_lease_expires(url: str) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 5
    while client.exists("qcompile:STR-1:lease"):
        assert time.monotonic() < deadline, "lease never expired"
        time.sleep(0.02)
    client.close()


def test_an_expired_lease_fences_off_the_old_holder(redis_url: str) -> None:
    a = RedisStateStore(redis_url, "STR-1", "host-a-1", lease_ttl_s=0.3)
    b = RedisStateStore(redis_url, "STR-1", "host-b-2", lease_ttl_s=5)
    a.acquire()
    a.save({**STATE, "seq": 1})
    a._stop_renewal()  # as if a's process froze (GC pause, SIGSTOP, partition)
    _wait_until_lease_expires(redis_url)
    b.acquire()
    b.save({**STATE, "seq": 2})
    with pytest.raises(LeaseError, match="host-a-1 lost the lease") as caught:
        a.save({**STATE, "seq": 99})
    assert "instance host-b-2" in str(caught.value)
    with pytest.raises(LeaseError):
        a.heartbeat({"cycle": 1})
    assert b.load()["seq"] == 2  # the old holder wrote nothing
    a.release()  # not ours any more: b keeps it
    b.save({**STATE, "seq": 3})
    b.close()


def test_the_renewal_thread_notices_a_lost_lease(redis_url: str) -> None:
    a = RedisStateStore(redis_url, "STR-1", "a", lease_ttl_s=0.3)
    a.acquire()
    client = redis.Redis.from_url(redis_url)
    client.set("qcompile:STR-1:lease", "someone else")
    deadline = time.monotonic() + 2
    while a._lost is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(LeaseError, match="lease lost"):
        a.save(STATE)
    assert client.get("qcompile:STR-1:state") is None
    a.close()
    assert client.get("qcompile:STR-1:lease") == b"someone else"
    client.close()


def test_redis_location_and_errors_hide_the_password() -> None:
    port = free_port()  # nothing listens there
    store = RedisStateStore(f"redis://:hunter2pw@127.0.0.1:{port}/0", "STR-1", "a")
    assert "hunter2pw" not in store.location
    assert store.location == f"redis://127.0.0.1:{port}/0 qcompile:STR-1:*"
    with pytest.raises(StateError) as caught:
        store.acquire()
    assert "hunter2pw" not in str(caught.value) and "taking the lease" in str(caught.value)
    store.close()
    other = RedisStateStore("redis://ops:pw9@h:1/2?password=pw9&ssl_cert_reqs=none", "S", "a")
    assert "pw9" not in other.location and other.location.startswith("redis://ops@h:1/2?")


def test_a_corrupt_redis_state_is_an_error(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).set("qcompile:STR-1:state", b'{"seq":4,"pos')
    with pytest.raises(StateError, match=r"qcompile:STR-1:state.*corrupt"):
        RedisStateStore(redis_url, "STR-1", "a").load()


# -- open_store -----------------------------------------------------------------------------------


def test_open_store_from_deployment_specs(tmp_path: Path, redis_url: str) -> None:
    store = open_store({"kind": "file", "path": "state"}, "STR-1", "a", tmp_path)
    assert isinstance(store, FileStateStore)
    assert store.location == str(tmp_path / "state" / "STR-1")

    env = {"QCOMPILE_REDIS_URL": redis_url}
    spec = {"kind": "redis", "url": "${oc.env:QCOMPILE_REDIS_URL}", "lease_ttl_s": 2}
    store = open_store(spec, "STR-1", "a", tmp_path, env=env)
    assert isinstance(store, RedisStateStore) and store.lease_ttl_s == 2
    store.acquire()
    store.save(STATE)
    assert store.load() == STATE
    store.close()

    with pytest.raises(SecretError, match="QCOMPILE_REDIS_URL is not set"):
        open_store(spec, "STR-1", "a", tmp_path, env={})
    with pytest.raises(StateError, match="kind"):
        open_store({"kind": "s3"}, "STR-1", "a", tmp_path)
    with pytest.raises(StateError, match="unknown key"):
        open_store({"kind": "file", "pth": "x"}, "STR-1", "a", tmp_path)
