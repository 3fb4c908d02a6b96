"""Content hashes with a canonical encoding, so equal inputs give equal digests on any machine."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace: the form every hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    return sha256_text(canonical_json(value))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(
    directory: Path, files: list[Path], file_hash: Callable[[Path], str] = sha256_file
) -> str:
    """Content hash of a data set: its files' paths (relative to ``directory``) and contents."""
    return sha256_json([(f.relative_to(directory).as_posix(), file_hash(f)) for f in sorted(files)])


# The runtime's own packages and the shared modules whose code it runs (its defaults, its data
# contract, the daily statistics of its deviation alert): a change to any of them is a change
# to what the self-test vouched for.
RUNTIME_PACKAGES = (
    "runtime",
    "emulator",
    "marketdata",
    "runtimedefaults.py",
    "dailystats.py",
    "execution.py",
    "research/data.py",
)


def sources_sha256(root: Path, packages: tuple[str, ...]) -> str:
    """Hash of the Python sources of ``packages`` (folders under ``root``, sub-packages included,
    or single modules), each file named by its path below ``root``: read, never imported."""
    digest = hashlib.sha256()
    for package in packages:
        where = root / package
        for path in [where] if where.is_file() else sorted(where.rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def runtime_sha256() -> str:
    """Hash of the production runtime's source files: what a `qcompile selftest` result vouches
    for. The compiler reads the same files (never imports them) to check that result."""
    return sources_sha256(Path(__file__).resolve().parent, RUNTIME_PACKAGES)
