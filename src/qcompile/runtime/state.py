"""Durable state for the production runner: save every cycle, recover after a crash.

The promise is "a kill -9 at any moment loses nothing that was acknowledged": :meth:`save`
returns only once the state is durable, and :meth:`load` returns either the last state whose
save returned or one that was being saved when the process died, always complete.

A lease makes sure one instance at a time writes a strategy's state: two runners deciding for the
same strategy would double every order.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from qcompile.errors import QcompileError
from qcompile.runtime import statelog
from qcompile.runtime.secrets import resolve

log = logging.getLogger("qcompile.live.state")

STATE_FILE = "state.json"
LOG_FILE = "state.log"  # the changes since state.json was written (see statelog)
# the log's size, allocated whole at each checkpoint: a line is written into space the file
# already has (an append must also grow the file, metadata synced on every write: measured 0.23
# against 0.15 ms). A line that would not fit writes a new checkpoint instead: at 10,000 pushes
# a second about once a second; a restart replays at most this much.
CHECKPOINT_LOG_BYTES = 16 * 1024 * 1024
HEARTBEAT_FILE = "heartbeat.json"
JOURNAL_FILE = "journal.jsonl"
LEASE_FILE = "lease"
_TEMP_SUFFIX = re.compile(r"\.tmp-\d+$")


class StateError(QcompileError):
    """The state cannot be read or written; the runner must not trade on a guess."""


class LeaseError(StateError):
    """Another instance holds this strategy's lease (or this instance lost it)."""


class StateStore(Protocol):
    """Where a runner keeps its state. One instance per strategy holds the lease at a time."""

    location: str  # human-readable, never with a secret in it

    def acquire(self) -> None:
        """Take the lease for this strategy; LeaseError names the holder and since when."""

    def load(self) -> dict[str, Any] | None:
        """The last durably saved state, or None on first start; StateError if unreadable."""

    def save(self, state: dict[str, Any]) -> None:
        """Store ``state`` as canonical JSON; returns only when it is durable."""

    def prepare(self) -> None:
        """Get ready for the next save while nothing waits for it (the saver calls it after
        each acknowledgement); a store with nothing to prepare does nothing."""

    def load_document(self, name: str) -> dict[str, Any] | None:
        """A companion document kept beside the state (the paper broker's ledger, before it
        moved into the state), or None."""

    def heartbeat(self, info: dict[str, Any]) -> None:
        """Record liveness for monitoring: cheap, not made durable."""

    def read_heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat record, or None."""

    def append_journal(self, *records: dict[str, Any]) -> None:
        """Append durable records to the strategy's journal (fills, daily equity, alerts,
        rollbacks), in one write: what reviews and retrospectives read. Needs no lease: appends
        never clash."""

    def read_journal(self) -> list[dict[str, Any]]:
        """Every journal record, oldest first."""

    def release(self) -> None:
        """Drop the lease; idempotent."""

    def close(self) -> None:
        """Release and free every resource; idempotent."""


def canonical_json(state: Mapping[str, Any]) -> bytes:
    """One byte string per state: sorted keys, no spaces, UTF-8, in compiled code (orjson: a
    500-symbol state in a tenth of a millisecond, where the json module takes three, on every
    save). JSON has no NaN or infinity, and orjson would write them as null: the engine refuses
    a non-finite amount before it reaches a state, and this refuses the numbers it holds."""
    try:
        data = orjson.dumps(state, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError as err:
        raise StateError(f"state is not JSON-serialisable: {err}") from err
    _refuse_non_finite(state)
    return data


def _refuse_non_finite(state: Mapping[str, Any]) -> None:
    """Walk the state for a NaN or infinity (orjson would write null for it, and a state that
    lost an amount would resume with a different book)."""
    if not _finite(state):
        raise StateError("state is not JSON-serialisable: it holds a NaN or an infinity")


def _finite(value: Any) -> bool:
    """True unless a float in ``value`` (nested dicts and lists) is NaN or infinite. A container
    of numbers (or of rows of numbers) is summed in C: the sum of finite numbers is finite unless
    it overflows, and any NaN or infinity makes it not; only where that fails is it walked item
    by item."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list | tuple):
        return True
    try:
        total = sum(value)
    except TypeError:  # not all numbers: rows of numbers (bars, prices), or each on its own
        try:
            total = sum(map(sum, value))
        except TypeError:
            return all(_finite(item) for item in value)
    return math.isfinite(total) or all(_finite(item) for item in value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _parse_state(data: bytes | str, where: str) -> dict[str, Any]:
    try:
        state = json.loads(data.encode() if isinstance(data, str) else data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StateError(
            f"{where}: state is corrupt or truncated ({len(data)} bytes: {err}); refusing to start "
            "from an empty state: restore it from a backup or move it away deliberately"
        ) from err
    if not isinstance(state, dict):
        raise StateError(f"{where}: state is a JSON {type(state).__name__}, not an object")
    return state


def _parse_record(data: bytes | str | None) -> dict[str, Any] | None:
    """A monitoring record (heartbeat, lease holder): best effort, None if unreadable."""
    if not data:
        return None
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


# the state's temporary file: each write returns only once its content is on disk (the file's
# fsync without a call of its own)
DURABLE_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC
# the state log and the journal: whole lines appended, each write durable when it returns
APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_DSYNC
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_DSYNC  # written at offsets, into allocated space


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # unbuffered os.write: nothing to flush, but writes may be partial
        view = view[os.write(fd, view) :]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _journal_line(record: dict[str, Any]) -> str:
    """A journal record as the stores keep it: one line of sorted JSON."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def _write_file(dir_fd: int, name: str, data: bytes, *, durable: bool) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: afterwards it holds the old or the new bytes,
    whatever crashes when (temp file, fsync, rename, directory fsync; see FileStateStore)."""
    path = Path(path)
    temp = f"{path.name}.tmp-{os.getpid()}"
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise StateError(f"{path}: could not write: {err}") from err
    try:
        _write_file(dir_fd, temp, data, durable=True)
        os.replace(temp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise StateError(f"{path}: could not write: {err}") from err
    finally:
        os.close(dir_fd)


def _journal_lines(lines: list[str], where: str) -> list[dict[str, Any]]:
    """Parsed journal records; a torn last line (a crash mid-append) is skipped, any other bad
    line is an error naming its number."""
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise StateError(f"{where}:{number}: journal line is not JSON") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def _check_strategy_id(strategy_id: str) -> None:
    # It becomes a directory name and a Redis key part: keep it one plain path component.
    if not strategy_id or strategy_id in {".", ".."} or any(c in strategy_id for c in "/\\:\0"):
        raise StateError(f"strategy id {strategy_id!r} cannot name a state location")


def _describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another instance (holder record not readable yet)"
    text = f"instance {holder.get('instance_id', '?')}"
    if "pid" in holder:
        text += f" (pid {holder['pid']}"
        text += f" on {holder['host']})" if "host" in holder else ")"
    return text + f" since {holder.get('since', '?')}"


# --------------------------------------------------------------------------------------------
# File store


class FileStateStore:
    """State in ``<directory>/<strategy_id>/``: ``state.json`` and ``state.log``, beside
    ``journal.jsonl``, ``heartbeat.json`` and ``lease``.

    The first save of a run, and any save whose line would take the log past
    CHECKPOINT_LOG_BYTES, writes a checkpoint: a temporary file in the same directory, opened
    with O_DSYNC (the write returns once the content is durable), renamed over ``state.json``,
    then the directory fsynced; the log is then emptied and its space allocated anew. A rename
    within one file system is atomic, so ``state.json`` is always a complete old or new state;
    the synchronous write makes the new content durable before the name points at it, the fsync
    makes the rename itself durable (until the directory is synced a power loss can bring the
    old name back after ``save`` returned). Every other save writes one line after the last in
    ``state.log`` (opened with O_DSYNC, its space allocated ahead, zeros after the last line):
    what changed since the previous save, checksummed, numbered by the state's ``seq`` (see
    :mod:`qcompile.runtime.statelog`). ``load`` reads the checkpoint and replays the log; a
    torn last line is a save that never returned and is dropped.

    The lease is an exclusive ``flock`` on ``lease`` held for the store's life: the kernel drops
    it the moment the holder dies, even by kill -9, so a restart never waits for an expiry.
    """

    def __init__(self, directory: Path, strategy_id: str, instance_id: str) -> None:
        _check_strategy_id(strategy_id)
        self.strategy_id = strategy_id
        self.instance_id = instance_id
        self.path = Path(directory) / strategy_id
        self.location = str(self.path)
        self._state_path = self.path / STATE_FILE
        self._temp_name = f"{STATE_FILE}.tmp-{os.getpid()}"
        self._lease_fd: int | None = None
        self._dir_fd: int | None = None  # kept open: saves one open/close per save
        # the next save's temporary file, opened ahead (prepare): under load every system call
        # of a save waits for the interpreter lock again, so the fewer on its path the better
        self._next_fd: int | None = None
        self._spent_fd: int | None = None  # the last save's file, renamed, not yet closed
        self._dir_identity: tuple[int, int] | None = None  # (st_dev, st_ino) of ``_dir_fd``
        self._log_fd: int | None = None  # state.log (LOG_FLAGS), from the first checkpoint on
        self._log_bytes = 0  # written to it since the checkpoint
        self._saved: dict[str, Any] | None = None  # the last state saved: what a line differs from
        self._journal_fd: int | None = None  # journal.jsonl, O_DSYNC | O_APPEND, while leased

    # -- lease --------------------------------------------------------------------------------

    def acquire(self) -> None:
        if self._lease_fd is not None:
            return
        try:
            self._make_directory_durably()
            lease_fd = os.open(self.path / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StateError(f"{self.location}: cannot open the state directory: {err}") from err
        try:
            fcntl.flock(lease_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _parse_record(os.pread(lease_fd, 4096, 0))
            os.close(lease_fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise LeaseError(
                    f"{self.location}: strategy {self.strategy_id} is held by "
                    f"{_describe_holder(holder)}"
                ) from None
            raise StateError(f"{self.location}: cannot lock the lease file: {err}") from err
        holder = {
            "instance_id": self.instance_id,
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "since": _now(),
        }
        try:
            os.ftruncate(lease_fd, 0)
            os.pwrite(lease_fd, json.dumps(holder).encode() + b"\n", 0)
            self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            self._journal_fd = os.open(JOURNAL_FILE, APPEND_FLAGS, 0o644, dir_fd=self._dir_fd)
        except OSError as err:
            os.close(lease_fd)
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None
            raise StateError(f"{self.location}: cannot take the lease: {err}") from err
        self._lease_fd = lease_fd
        self._remove_stale_temp_files()

    def _make_directory_durably(self) -> None:
        # A new directory's own entry lives in its parent: sync each parent we add an entry
        # to, or a power loss soon after the first save could lose the whole directory.
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            parent_fd = os.open(created.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(parent_fd)
            finally:
                os.close(parent_fd)

    def _remove_stale_temp_files(self) -> None:
        # Left by a writer killed between create and rename (of this store or atomic_write
        # beside it); we hold the lease, so no writer is using them now.
        for name in os.listdir(self._dir_fd):
            if _TEMP_SUFFIX.search(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self._dir_fd)
                log.info("removed stale temporary file %s", self.path / name)

    def release(self) -> None:
        if self._lease_fd is None:
            return
        if self._saved is not None and self._log_bytes and self._dir_fd is not None:
            try:  # an orderly stop leaves the whole state in state.json, readable as it is
                self._checkpoint(self._dir_fd, self._saved)
            except StateError as err:
                log.warning(
                    "the state log stays beside the checkpoint (%s); a load replays it", err
                )
        if self._spent_fd is not None:
            os.close(self._spent_fd)
            self._spent_fd = None
        if self._next_fd is not None:  # a prepared temporary file nobody will write
            os.close(self._next_fd)
            self._next_fd = None
            with contextlib.suppress(OSError):
                os.unlink(self._temp_name, dir_fd=self._dir_fd)
        for name in ("_log_fd", "_journal_fd"):
            descriptor = getattr(self, name)
            if descriptor is not None:
                setattr(self, name, None)
                os.close(descriptor)
        self._saved, self._log_bytes = None, 0
        lease_fd, self._lease_fd = self._lease_fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(lease_fd, 0)  # no stale holder record for the next reader
        os.close(lease_fd)  # closing drops the flock
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
            self._dir_identity = None

    def close(self) -> None:
        self.release()

    def _require_lease(self) -> int:
        if self._lease_fd is None or self._dir_fd is None:
            raise StateError(f"{self.location}: acquire() the lease before writing state")
        return self._dir_fd

    # -- state --------------------------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        """The checkpoint with the log replayed over it. A reader beside a running store may
        see the checkpoint rewritten between its two reads (the log then starts after what it
        read): it reads both again."""
        log_path = self.path / LOG_FILE
        for attempt in range(3):
            checkpoint = self._read(self._state_path, "the state")
            changes = self._read(log_path, "the state log") or b""
            if checkpoint is None:
                if changes.strip():
                    raise StateError(
                        f"{log_path}: a state log without its checkpoint {STATE_FILE}; refusing "
                        "to start from an empty state: restore state.json from a backup"
                    )
                return None
            state = _parse_state(checkpoint, str(self._state_path))
            try:
                statelog.replay(state, changes, str(log_path))
            except statelog.LogError as err:
                if attempt < 2 and self._lease_fd is None:
                    continue
                raise StateError(
                    f"{err}; refusing to start from an older state: restore the state "
                    "directory from a backup or move it away deliberately"
                ) from None
            return state
        return None  # not reached: the last attempt returns or raises

    @staticmethod
    def _read(path: Path, what: str) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StateError(f"{path}: cannot read {what}: {err}") from err

    def prepare(self) -> None:
        """Open the next checkpoint's temporary file now, with O_DSYNC (each write returns
        durable, so the checkpoint needs no fsync of its own): it is then write, rename, fsync
        of the directory. Most saves are a log line and leave the prepared file for later."""
        if self._spent_fd is not None:
            os.close(self._spent_fd)
            self._spent_fd = None
        if self._next_fd is not None or self._lease_fd is None or self._dir_fd is None:
            return
        try:
            self._next_fd = os.open(self._temp_name, DURABLE_TEMP_FLAGS, 0o644, dir_fd=self._dir_fd)
        except OSError:
            self._next_fd = None  # the save opens it itself, and says what failed

    def save(self, state: dict[str, Any]) -> None:
        """Durable when it returns: one line of changes in the log, or a checkpoint (the first
        save, a state whose ``seq`` does not follow the last one's, a log grown too long)."""
        dir_fd = self._require_lease()
        self._check_still_here(dir_fd)
        last, seq = self._saved, state.get("seq")
        line = None
        if (
            last is not None
            and self._log_fd is not None
            and type(seq) is int
            and last.get("seq") == seq - 1
        ):
            change = statelog.difference(last, state)
            _refuse_non_finite(change)
            try:
                line = statelog.encode(seq, change)
            except TypeError as err:
                raise StateError(f"state is not JSON-serialisable: {err}") from err
        if line is None or self._log_bytes + len(line) > CHECKPOINT_LOG_BYTES:
            self._checkpoint(dir_fd, state)
        else:
            try:
                _pwrite_all(self._log_fd, line, self._log_bytes)
            except OSError as err:  # a partial line is a torn tail: load drops it
                raise StateError(
                    f"{self.path / LOG_FILE}: could not save the state: {err}"
                ) from err
            self._log_bytes += len(line)
        self._saved = state

    def _checkpoint(self, dir_fd: int, state: dict[str, Any]) -> None:
        data = canonical_json(state)
        self.prepare()
        fd, self._next_fd = self._next_fd, None
        try:
            if fd is None:  # could not be prepared: the same open, with the error to report
                fd = os.open(self._temp_name, DURABLE_TEMP_FLAGS, 0o644, dir_fd=dir_fd)
            _write_all(fd, data)
            os.replace(self._temp_name, STATE_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                if fd is not None:
                    os.close(fd)
                os.unlink(self._temp_name, dir_fd=dir_fd)
            raise StateError(f"{self._state_path}: could not save the state: {err}") from err
        self._spent_fd = fd  # closed by the next prepare, after the acknowledgement
        # every line of the log is in the checkpoint now; lines a crash leaves before this
        # truncation is durable are skipped at load by their seq
        self._saved = None
        try:
            if self._log_fd is None:
                self._log_fd = os.open(LOG_FILE, LOG_FLAGS, 0o644, dir_fd=dir_fd)
            os.ftruncate(self._log_fd, 0)
            with contextlib.suppress(OSError):  # not everywhere: then each line grows the file
                os.posix_fallocate(self._log_fd, 0, CHECKPOINT_LOG_BYTES)
            os.fsync(self._log_fd)  # empty and allocated before its first line: no old line
            # can come back after a power loss to sit behind the new ones
        except OSError as err:
            raise StateError(f"{self.path / LOG_FILE}: could not start the log: {err}") from err
        self._log_bytes = 0

    def _check_still_here(self, dir_fd: int) -> None:
        """The saves go through a descriptor of the directory opened at start-up: if that
        directory was moved or replaced since, they would land where no restart looks."""
        if self._dir_identity is None:  # the descriptor's directory: it cannot change
            opened = os.fstat(dir_fd)
            self._dir_identity = (opened.st_dev, opened.st_ino)
        try:
            current = os.stat(self.path)
        except OSError as err:
            raise StateError(f"{self.path}: the state directory is gone: {err}") from err
        if (current.st_dev, current.st_ino) != self._dir_identity:
            raise StateError(
                f"{self.path}: the state directory was moved or replaced while running; "
                "a save would go where no restart looks"
            )

    def _document_path(self, name: str) -> Path:
        _check_strategy_id(name)  # one plain path component, like a strategy id
        return self.path / f"{name}.json"

    def load_document(self, name: str) -> dict[str, Any] | None:
        path = self._document_path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StateError(f"{path}: cannot read: {err}") from err
        return _parse_state(data, str(path))

    # -- heartbeat ----------------------------------------------------------------------------

    def heartbeat(self, info: dict[str, Any]) -> None:
        """Write ``info`` plus ``instance_id`` and ``heartbeat_at``; renamed into place so a
        reader never sees half a record, but not fsynced (it is only for monitoring)."""
        dir_fd = self._require_lease()
        record = {**info, "instance_id": self.instance_id, "heartbeat_at": _now()}
        temp = f"{HEARTBEAT_FILE}.tmp-{os.getpid()}"
        try:
            _write_file(dir_fd, temp, json.dumps(record, default=str).encode(), durable=False)
            os.replace(temp, HEARTBEAT_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as err:
            raise StateError(f"{self.path / HEARTBEAT_FILE}: cannot write: {err}") from err

    def read_heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat, or None if there is none or it is unreadable (it is not fsynced,
        so after a power loss it may legitimately be empty)."""
        try:
            return _parse_record((self.path / HEARTBEAT_FILE).read_bytes())
        except OSError:
            return None

    def append_journal(self, *records: dict[str, Any]) -> None:
        # One write of whole lines with O_APPEND: concurrent appenders never interleave a line;
        # O_DSYNC makes it durable on return (a cycle's fills cost one write, not one each).
        if not records:
            return
        data = "".join(_journal_line(record) + "\n" for record in records).encode("utf-8")
        descriptor = self._journal_fd  # held open with the lease
        if descriptor is not None:
            _write_all(descriptor, data)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path / JOURNAL_FILE, APPEND_FLAGS, 0o644)
        try:
            _write_all(descriptor, data)
        finally:
            os.close(descriptor)

    def read_journal(self) -> list[dict[str, Any]]:
        try:
            text = (self.path / JOURNAL_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return _journal_lines(text.splitlines(), str(self.path / JOURNAL_FILE))


# --------------------------------------------------------------------------------------------
# Redis store

# KEYS[1] = lease; ARGV[1] = our lease value, ARGV[2] = ttl in ms
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] = lease, KEYS[2] = target; ARGV[1] = our lease value, ARGV[2] = data.
# Fencing: the owner check and the write are one atomic step on the server, so an instance that
# lost its lease (paused, partitioned) can never overwrite its successor's state.
_WRITE_IF_OWNER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def redact_url(url: str) -> str:
    """``url`` without its password (in the authority or as a ``password`` query parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class RedisStateStore:
    """State in Redis under ``qcompile:<strategy_id>:{state,heartbeat,lease}``.

    The lease is a key set with ``NX PX ttl`` holding a unique value per acquisition; a daemon
    thread renews it every ttl/3 with a script that extends it only while it is still ours. Every
    write checks the owner on the server in the same script (fencing). A crashed holder's lease
    expires after ``lease_ttl_s``: a restart may have to wait that long.

    Durability is the server's: ``save`` returns once Redis acknowledged the write, which with
    ``appendonly yes`` and ``appendfsync always`` means it is fsynced to the append-only file.
    With ``everysec`` up to a second of acknowledged saves can be lost if the server host
    crashes; :meth:`acquire` logs a warning when it can see that setting.
    """

    def __init__(
        self,
        url: str,
        strategy_id: str,
        instance_id: str,
        lease_ttl_s: float = 10.0,
        client: Any = None,
    ) -> None:
        _check_strategy_id(strategy_id)
        if lease_ttl_s <= 0:
            raise StateError(f"lease_ttl_s must be positive, got {lease_ttl_s}")
        self.strategy_id = strategy_id
        self.instance_id = instance_id
        self.lease_ttl_s = lease_ttl_s
        prefix = self._prefix = f"qcompile:{strategy_id}"
        self.keys = {k: f"{prefix}:{k}" for k in ("state", "heartbeat", "lease")}
        self.location = f"{redact_url(url)} {prefix}:*"
        import redis  # imported here: only deployments with a Redis store need the package

        self._redis_error: type[Exception] = redis.RedisError
        self._owns_client = client is None
        if client is None:
            try:
                client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
            except ValueError:
                # redis-py's message may quote the URL, password included
                raise StateError(f"not a valid Redis URL: {redact_url(url)}") from None
        self._client = client
        self._renew = client.register_script(_RENEW)
        self._write_if_owner = client.register_script(_WRITE_IF_OWNER)
        self._release = client.register_script(_RELEASE)
        self._token: str | None = None  # our lease value while we think we hold it
        self._lost: str | None = None  # why we no longer hold it, set by the renewal thread
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.lease_ttl_s * 1000))

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a Redis call; connection problems become StateError naming the location."""
        try:
            return fn(*args, **kwargs)
        except self._redis_error as err:
            raise StateError(f"{self.location}: {action} failed: {err}") from err

    # -- lease --------------------------------------------------------------------------------

    def acquire(self) -> None:
        if self._token is not None and self._lost is None:
            return
        self._stop_renewal()
        token = json.dumps(
            {
                "instance_id": self.instance_id,
                "pid": os.getpid(),
                "host": os.uname().nodename,
                "since": _now(),
                "token": uuid.uuid4().hex,  # two acquisitions never share a value
            },
            sort_keys=True,
        )
        lease = self.keys["lease"]
        taken = self._call(
            "taking the lease", self._client.set, lease, token, nx=True, px=self._ttl_ms
        )
        if not taken:
            raise LeaseError(
                f"{self.location}: strategy {self.strategy_id} is held by {self._holder()}"
            )
        self._token, self._lost = token, None
        self._warn_unless_fsync_always()
        self._stop = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_loop,
            args=(token, self._stop),
            name=f"qcompile-lease-{self.strategy_id}",
            daemon=True,
        )
        self._renewer.start()

    def _holder(self) -> str:
        """Who holds the lease now, for an error message."""
        lease = self.keys["lease"]
        value = self._call("reading the lease", self._client.get, lease)
        if value is None:
            return "nobody (the lease expired)"
        remaining_ms = self._call("reading the lease", self._client.pttl, lease)
        text = _describe_holder(_parse_record(value))
        if isinstance(remaining_ms, int) and remaining_ms > 0:
            text += f"; the lease expires in {remaining_ms / 1000:.1f} s unless renewed"
        return text

    def _warn_unless_fsync_always(self) -> None:
        try:
            config = self._client.config_get("append*")
            aof, setting = config.get("appendonly"), config.get("appendfsync")
        except Exception:  # CONFIG is often disabled on managed servers: nothing to check
            return
        if aof != "yes" or setting != "always":
            log.warning(
                "%s: the server runs with appendonly=%s appendfsync=%s; acknowledged saves may "
                "be lost if the Redis host crashes (use appendonly yes, appendfsync always)",
                self.location,
                aof,
                setting,
            )

    def _renew_loop(self, token: str, stop: threading.Event) -> None:
        interval = self.lease_ttl_s / 3
        last_renewed = time.monotonic()
        while not stop.wait(interval):
            try:
                renewed = self._renew(keys=[self.keys["lease"]], args=[token, self._ttl_ms])
            except self._redis_error as err:
                # Unreachable: we cannot know, so once a full ttl passed assume it is gone.
                if time.monotonic() - last_renewed >= self.lease_ttl_s:
                    self._lost = f"could not renew the lease for {self.lease_ttl_s} s ({err})"
                    log.error("%s: lease lost: %s", self.location, self._lost)
                    return
                continue
            if not renewed:
                self._lost = "the lease expired or was taken by another instance"
                log.error("%s: lease lost: %s", self.location, self._lost)
                return
            last_renewed = time.monotonic()

    def _stop_renewal(self) -> None:
        """Stop the renewal thread (also the test hook to let a lease expire)."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)
        self._renewer = None

    def _require_lease(self) -> str:
        if self._token is None:
            raise StateError(f"{self.location}: acquire() the lease before writing state")
        if self._lost is not None:
            raise LeaseError(f"{self.location}: lease lost: {self._lost}")
        return self._token

    def _write_fenced(self, key: str, data: bytes, action: str) -> None:
        token = self._require_lease()
        keys = [self.keys["lease"], self.keys[key]]
        if not self._call(action, self._write_if_owner, keys=keys, args=[token, data]):
            self._lost = "the lease expired or was taken by another instance"
            raise LeaseError(
                f"{self.location}: instance {self.instance_id} lost the lease of strategy "
                f"{self.strategy_id}, nothing written; it is now held by {self._holder()}"
            )

    def release(self) -> None:
        self._stop_renewal()
        token, self._token = self._token, None
        if token is None:
            return
        try:
            self._release(keys=[self.keys["lease"]], args=[token])
        except Exception as err:  # shutting down anyway: the lease expires by itself
            log.warning(
                "%s: could not release the lease (%s); it expires in %.1f s",
                self.location,
                err,
                self.lease_ttl_s,
            )

    def close(self) -> None:
        self.release()
        if self._owns_client:
            with contextlib.suppress(Exception):
                self._client.close()

    # -- state --------------------------------------------------------------------------------

    def load(self) -> dict[str, Any] | None:
        data = self._call("loading the state", self._client.get, self.keys["state"])
        if data is None:
            return None
        return _parse_state(data, f"{self.location} (key {self.keys['state']})")

    def save(self, state: dict[str, Any]) -> None:
        self._write_fenced("state", canonical_json(state), "saving the state")

    def prepare(self) -> None:
        """Nothing to prepare: a save is one fenced round trip."""

    def load_document(self, name: str) -> dict[str, Any] | None:
        _check_strategy_id(name)
        key = f"{self._prefix}:{name}"
        data = self._call(f"loading {name}", self._client.get, key)
        return None if data is None else _parse_state(data, f"{self.location} (key {key})")

    def heartbeat(self, info: dict[str, Any]) -> None:
        record = {**info, "instance_id": self.instance_id, "heartbeat_at": _now()}
        self._write_fenced("heartbeat", json.dumps(record, default=str).encode(), "heartbeat")

    def read_heartbeat(self) -> dict[str, Any] | None:
        return _parse_record(
            self._call("reading the heartbeat", self._client.get, self.keys["heartbeat"])
        )

    def append_journal(self, *records: dict[str, Any]) -> None:
        if not records:
            return
        lines = [_journal_line(record) for record in records]
        self._call(
            "appending to the journal", self._client.rpush, f"{self._prefix}:journal", *lines
        )

    def read_journal(self) -> list[dict[str, Any]]:
        lines = self._call(
            "reading the journal", self._client.lrange, f"{self._prefix}:journal", 0, -1
        )
        return _journal_lines(
            [x.decode() if isinstance(x, bytes) else x for x in lines], f"{self._prefix}:journal"
        )


# --------------------------------------------------------------------------------------------


def open_store(
    spec: Mapping[str, Any],
    strategy_id: str,
    instance_id: str,
    root: Path,
    env: Mapping[str, str] = os.environ,
) -> StateStore:
    """The store a deployment's ``state_store`` describes (not yet acquired).

    ``{"kind": "file", "path": "state"}`` (relative to ``root``) or
    ``{"kind": "redis", "url": "${oc.env:QCOMPILE_REDIS_URL}", "lease_ttl_s": 10}``.
    """
    kind = spec.get("kind")
    allowed = {"file": {"kind", "path"}, "redis": {"kind", "url", "lease_ttl_s"}}
    if kind not in allowed:
        raise StateError(f"state_store.kind: expected 'file' or 'redis', got {kind!r}")
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise StateError(f"state_store: unknown key(s) for kind {kind}: {', '.join(unknown)}")
    if kind == "file":
        path = resolve(str(spec.get("path", "state")), env, what="state_store.path")
        return FileStateStore(Path(root) / str(path), strategy_id, instance_id)
    url = resolve(spec.get("url"), env, what="state_store.url")
    if not url:
        raise StateError("state_store.url: a Redis store needs a url")
    return RedisStateStore(
        url, strategy_id, instance_id, lease_ttl_s=float(spec.get("lease_ttl_s", 10.0))
    )
