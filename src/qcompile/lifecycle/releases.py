"""Release history: which committed artefacts of a strategy went to production, and when.

``release`` records one strategy's generated artefacts as they stand in a git commit: its
version, phase, the three pins (strategy, signal, data), a hash of every file in
``generated/<id>/`` and the commit itself, so that a rollback can restore exactly those files from
git. Records are appended to ``releases/<id>.jsonl``, one canonical JSON object per line, and
never rewritten: the file is committed and reviewed like everything else. ``diff`` shows what
changed in the artefacts and pins between two releases, git revisions or the working tree.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any, NoReturn

import yaml

from qcompile import vcs
from qcompile.errors import DiagnosticsError, QcompileError, StaleError
from qcompile.hashing import sha256_file
from qcompile.project import Project

RELEASES_DIR = "releases"
FORMAT = 1
LATEST, PREVIOUS = "latest", "previous"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA1 = re.compile(r"[0-9a-f]{40}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


class ReleaseError(QcompileError):
    """A release cannot be recorded, read or compared; the message says what to do."""


@dataclass(frozen=True)
class Release:
    """One line of ``releases/<id>.jsonl``.

    ``artefacts`` maps each file of ``generated/<id>/`` (path relative to the project root) to
    its sha256; ``commit`` is the full sha of a commit holding exactly those files. ``repeated``
    is not stored: ``release`` sets it when the version was already recorded with these artefacts
    and it returns the earlier record instead of writing a new one.
    """

    strategy_id: str
    version: str
    phase: str
    pins: dict[str, Any]
    artefacts: dict[str, str]
    commit: str
    released_at: str
    released_by: str
    note: str | None
    previous: str | None
    format: int = FORMAT
    repeated: bool = False

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["repeated"]
        return record

    def to_line(self) -> str:
        """Canonical form (sorted keys, compact): the same release always gives the same bytes."""
        return (
            json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            + "\n"
        )

    @property
    def signal_pin(self) -> str:
        signal = self.pins.get("signal", {})
        return f"{signal.get('name')}@{signal.get('version')}"

    @property
    def data_pin(self) -> str:
        data = self.pins.get("data", {})
        fingerprint = data.get("fingerprint") or "none"
        return f"{data.get('vendor')} {data.get('api_version')} ({fingerprint[:12]})"


# -- git ------------------------------------------------------------------------------------------


def _git(project: Project, *args: str) -> bytes:
    """Run git in the project root; a failure becomes a ReleaseError quoting git's message."""
    try:
        return vcs.git(project.root, *args)
    except vcs.VcsError as error:
        raise ReleaseError(str(error)) from error


def _git_text(project: Project, *args: str) -> str:
    return _git(project, *args).decode().strip()


def _require_repository(project: Project) -> None:
    try:
        _git(project, "rev-parse", "--show-toplevel")
    except ReleaseError as error:
        raise ReleaseError(
            f"{project.root} is not in a git repository: a release records the commit that holds "
            "its artefacts; run `git init` and commit conf/ and generated/ first"
        ) from error


def _commit_of(project: Project, revision: str) -> str | None:
    """The full sha of a git revision, or None when git does not know it."""
    return vcs.commit_of(project.root, revision)


def _tracked_files(project: Project, commit: str, folder: str) -> list[str]:
    """Files under ``folder`` (relative to the project root) in ``commit``, sorted."""
    listing = _git(project, "ls-tree", "-r", "-z", "--name-only", commit, "--", folder)
    return sorted(name for name in listing.decode().split("\0") if name)


# -- the history file -----------------------------------------------------------------------------


def history_file(project: Project, strategy_id: str) -> Path:
    return project.root / RELEASES_DIR / f"{strategy_id}.jsonl"


def _check_id(strategy_id: str) -> str:
    if not _SAFE_ID.fullmatch(strategy_id):
        raise ReleaseError(f"{strategy_id!r} is not a strategy id")
    return strategy_id


_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (int,),
    "strategy_id": (str,),
    "version": (str,),
    "phase": (str,),
    "pins": (dict,),
    "artefacts": (dict,),
    "commit": (str,),
    "released_at": (str,),
    "released_by": (str,),
    "note": (str, type(None)),
    "previous": (str, type(None)),
}


def _parse_line(text: str, strategy_id: str) -> Release:
    """One line as a Release; ValueError says what is wrong with it."""
    try:
        record = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = sorted(set(_FIELDS) - set(record))
    unknown = sorted(set(record) - set(_FIELDS))
    if missing or unknown:
        raise ValueError(
            "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(unknown)}" if unknown else "",
                )
                if part
            )
        )
    for key, types in _FIELDS.items():
        if not isinstance(record[key], types) or isinstance(record[key], bool):
            raise ValueError(f"{key} has the wrong type")
    if record["format"] != FORMAT:
        raise ValueError(
            f"format {record['format']} is not supported (this qcompile reads {FORMAT})"
        )
    if record["strategy_id"] != strategy_id:
        raise ValueError(f"records strategy {record['strategy_id']}, not {strategy_id}")
    if not _SHA1.fullmatch(record["commit"]):
        raise ValueError("commit is not a full git sha")
    if not _TIMESTAMP.fullmatch(record["released_at"]):
        raise ValueError("released_at is not a UTC timestamp like 2026-01-31T12:00:00Z")
    if not all(isinstance(v, str) for v in record["artefacts"].values()):
        raise ValueError("artefacts must map paths to sha256 strings")
    return Release(**record)


def _read_history(
    handle: IO[bytes], path: Path, project: Project, strategy_id: str
) -> list[Release]:
    where = project.rel(path)
    data = handle.read()
    if data and not data.endswith(b"\n"):
        line = data.count(b"\n") + 1
        raise ReleaseError(
            f"{where}:{line}: incomplete line (no newline at the end): an interrupted write? "
            "remove the partial line"
        )
    releases: list[Release] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            release = _parse_line(raw.decode("utf-8"), strategy_id)
        except (UnicodeDecodeError, ValueError) as error:
            raise ReleaseError(f"{where}:{number}: corrupt release record: {error}") from None
        if release.version in seen:
            raise ReleaseError(
                f"{where}:{number}: version {release.version} was already released on line "
                f"{seen[release.version]}"
            )
        expected = releases[-1].version if releases else None
        if release.previous != expected:
            raise ReleaseError(
                f"{where}:{number}: previous is {release.previous or 'null'} but the line before "
                f"records {expected or 'nothing'}: lines were removed or reordered"
            )
        seen[release.version] = number
        releases.append(release)
    return releases


def load_history(project: Project, strategy_id: str) -> list[Release]:
    """Every release of a strategy, oldest first; every line is validated."""
    path = history_file(project, _check_id(strategy_id))
    if not path.is_file():
        return []
    with path.open("rb") as handle:
        return _read_history(handle, path, project, strategy_id)


def history(project: Project, strategy_id: str) -> list[Release]:
    return load_history(project, resolve_strategy(project, strategy_id))


def select_release(releases: list[Release], strategy_id: str, name: str) -> Release:
    """A release by version, or ``latest`` / ``previous`` (the one before the latest)."""
    if not releases:
        raise ReleaseError(f"no releases of {strategy_id} yet; record one with `qcompile release`")
    if name == LATEST:
        return releases[-1]
    if name == PREVIOUS:
        if len(releases) < 2:
            raise ReleaseError(f"{strategy_id} has only one release ({releases[0].version})")
        return releases[-2]
    for release in releases:
        if release.version == name:
            return release
    known = ", ".join(r.version for r in releases)
    raise ReleaseError(f"{strategy_id} has no release {name} (released: {known})")


def field_value(release: Release, name: str) -> str:
    """One field of a release as text: a leaf (``commit``, ``pins.signal.version``) or, for a
    group (``pins``), its JSON."""
    flat = release_fields(release)
    if name in flat:
        return flat[name]
    value: Any = release.to_dict()
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            known = ", ".join(sorted(release.to_dict()))
            raise ReleaseError(f"a release has no field {name!r} (fields: {known})")
        value = value[part]
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def release_fields(release: Release) -> dict[str, str]:
    """Every field of a release as text, nested ones dotted (``pins.signal.version``)."""
    return _flatten(release.to_dict())


def resolve_strategy(project: Project, name: str) -> str:
    """A strategy id from an id or a conf/strategy/ file name, as the build's manifest records."""
    from qcompile.compiler.build import read_manifest

    strategies: dict[str, Any] = read_manifest(project).get("strategies", {})
    if name in strategies:
        return name
    for strategy_id, entry in strategies.items():
        if Path(str(entry.get("source", ""))).stem == name:
            return strategy_id
    _check_id(name)
    if (project.generated_dir / name).is_dir() or history_file(project, name).is_file():
        return name
    known = ", ".join(sorted(strategies)) or "none; run `qcompile build`"
    raise ReleaseError(f"no strategy {name!r} in generated/ (strategies: {known})")


# -- recording a release --------------------------------------------------------------------------


def _load_yaml(data: bytes, where: str) -> Any:
    try:
        return yaml.load(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ReleaseError(f"{where} is not readable YAML: {error}") from None


def release_pins(params_pins: dict[str, Any]) -> dict[str, Any]:
    """The three pins a release records, from params.yaml's ``pins``."""
    strategy, signal, data = (params_pins.get(k) or {} for k in ("strategy", "signal", "data"))
    return {
        "strategy": {"id": strategy.get("id"), "version": strategy.get("version")},
        "signal": {k: signal.get(k) for k in ("name", "version", "source_sha256")},
        "data": {
            **{k: data.get(k) for k in ("vendor", "api_version", "protocol", "interval")},
            "timestamp": data.get("timestamp"),
            "fingerprint": (data.get("fingerprint") or {}).get("content_sha256"),
        },
    }


def _check_fresh(project: Project, strategy_id: str) -> None:
    """Refuse when generated/ is stale: when a build would change any file of it, the manifest
    and the index included (what `qcompile build --check` decides). Only when another strategy
    does not compile, so that the whole cannot be judged, is this strategy judged alone: its
    files, and the manifest's record of them."""
    from qcompile.compiler.build import build

    try:
        build(project, check=True)  # fast when nothing changed: no compile at all
        return
    except StaleError as error:
        _refuse_stale(strategy_id, error.paths)
    except DiagnosticsError:
        pass  # broken somewhere: look at this strategy alone (its own problems are raised)
    try:
        build(project, check=True, only=[strategy_id])
    except StaleError as error:
        _refuse_stale(strategy_id, error.paths)
    _check_manifest(project, strategy_id)


def _refuse_stale(strategy_id: str, paths: list[str]) -> NoReturn:
    mine = [p for p in paths if p.startswith(f"generated/{strategy_id}/")]
    shown = mine or paths
    listed = ", ".join(shown[:5]) + (", ..." if len(shown) > 5 else "")
    where = f"generated/{strategy_id}/" if mine else "generated/"
    raise ReleaseError(
        f"{where} is stale ({listed}): run `qcompile build`, review and commit the result, "
        "then release"
    ) from None


def _check_manifest(project: Project, strategy_id: str) -> None:
    """Refuse when generated/manifest.json does not record generated/<id>/ as it is (a partial
    build check compares a strategy's files, never the manifest: it differs by construction)."""
    from qcompile.compiler.build import MANIFEST, read_manifest

    entry = read_manifest(project).get("strategies", {}).get(strategy_id)
    outputs = entry.get("outputs") if isinstance(entry, dict) else None
    directory = project.generated_dir / strategy_id
    present = (
        {project.rel(p).removeprefix("generated/") for p in directory.rglob("*") if p.is_file()}
        if directory.is_dir()
        else set()
    )
    if (
        not isinstance(outputs, dict)
        or set(outputs) != present
        or any(sha256_file(project.generated_dir / p) != sha for p, sha in outputs.items())
    ):
        raise ReleaseError(
            f"generated/{MANIFEST} does not record generated/{strategy_id}/ as it is (stale or "
            "corrupt): run `qcompile build`, review and commit the result, then release"
        )


def _check_committed(project: Project, strategy_id: str, commit: str) -> list[str]:
    """The artefact files, after checking that ``commit`` holds exactly them and conf/."""
    folder = f"generated/{strategy_id}"
    dirty = _git(project, "status", "--porcelain", "--", folder, "conf").decode().splitlines()
    if dirty:
        listed = "; ".join(line.strip() for line in dirty[:5]) + ("; ..." if len(dirty) > 5 else "")
        raise ReleaseError(
            f"uncommitted changes in {folder}/ or conf/ ({listed}): a release must point at a "
            "commit holding exactly its artefacts; commit (or revert) them, then release"
        )
    directory = project.generated_dir / strategy_id
    present = (
        sorted(project.rel(p) for p in directory.rglob("*") if p.is_file())
        if directory.is_dir()
        else []
    )
    if not present:
        raise ReleaseError(f"{folder}/ is empty or missing: run `qcompile build` and commit it")
    tracked = _tracked_files(project, commit, folder)
    if present != tracked:
        extra = sorted(set(present) - set(tracked))
        raise ReleaseError(
            f"{', '.join(extra or sorted(set(tracked) - set(present)))} not in commit "
            f"{commit[:12]} (ignored by .gitignore?): commit every file of {folder}/"
        )
    return present


def _released_by(project: Project, by: str | None) -> str:
    if by:
        return by
    try:
        email = _git_text(project, "config", "user.email")
    except ReleaseError:
        email = ""
    if not email:
        raise ReleaseError("who releases? set `git config user.email` or pass --by EMAIL")
    return email


def _timestamp(clock: Callable[[], dt.datetime]) -> str:
    now = clock()
    if now.tzinfo is None:
        raise ValueError("the release clock must return an aware datetime")
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _locked(path: Path) -> Iterator[IO[bytes]]:
    """Open the history for appending under an exclusive lock: concurrent releases serialise."""
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if created:  # make the new file's directory entry durable too
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        handle.seek(0)
        yield handle


def release(
    project: Project,
    strategy_id: str,
    *,
    note: str | None,
    clock: Callable[[], dt.datetime],
    by: str | None = None,
) -> Release:
    """Record the committed artefacts of ``generated/<id>/`` as a release and return it.

    Refuses when generated/ is stale, the project is not in git, the artefacts or conf/ are not
    committed, or the version was already released with other artefacts. Releasing a version
    again with the same artefacts writes nothing and returns the earlier record (``repeated``).
    """
    strategy_id = resolve_strategy(project, strategy_id)
    _require_repository(project)
    commit = _commit_of(project, "HEAD")
    if commit is None:
        raise ReleaseError("the repository has no commit yet: commit conf/ and generated/ first")
    files = _check_committed(project, strategy_id, commit)
    released_by = _released_by(project, by)
    _check_fresh(project, strategy_id)
    params_path = f"generated/{strategy_id}/params.yaml"
    passport_path = f"generated/{strategy_id}/passport.yaml"
    params = _load_yaml((project.root / params_path).read_bytes(), params_path)
    passport = _load_yaml((project.root / passport_path).read_bytes(), passport_path)
    try:
        pins = release_pins(params["pins"])
        version = str(params["strategy"]["version"])
        phase = str(passport["lifecycle"]["phase"])
    except (KeyError, TypeError) as error:
        raise ReleaseError(f"{params_path} or {passport_path} lacks {error}") from None
    artefacts = {path: sha256_file(project.root / path) for path in files}

    path = history_file(project, strategy_id)
    with _locked(path) as handle:
        releases = _read_history(handle, path, project, strategy_id)
        for earlier in releases:
            if earlier.version != version:
                continue
            if earlier.artefacts == artefacts:
                return replace(earlier, repeated=True)
            changed = sorted(
                p
                for p in set(artefacts) | set(earlier.artefacts)
                if artefacts.get(p) != earlier.artefacts.get(p)
            )
            raise ReleaseError(
                f"{strategy_id} {version} was already released (commit {earlier.commit[:12]}) "
                f"with different artefacts ({', '.join(changed)}): bump strategy.version in "
                f"{_source(project, strategy_id)}, rebuild, commit, then release"
            )
        record = Release(
            strategy_id=strategy_id,
            version=version,
            phase=phase,
            pins=pins,
            artefacts=artefacts,
            commit=commit,
            released_at=_timestamp(clock),
            released_by=released_by,
            note=note or None,
            previous=releases[-1].version if releases else None,
        )
        handle.seek(0, os.SEEK_END)  # "a" mode appends anyway; be explicit
        handle.write(record.to_line().encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    return record


def _source(project: Project, strategy_id: str) -> str:
    from qcompile.compiler.build import read_manifest

    entry = read_manifest(project).get("strategies", {}).get(strategy_id, {})
    return str(entry.get("source") or "its conf/strategy/ file")


# -- comparing two sides --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    label: str  # shown in headers: "release 2.1.0 (1a2b3c4)", "HEAD~1 (1a2b3c4)", "working tree"
    commit: str | None  # None: the working tree


WORKING_TREE = _Side("working tree", None)


def _phrase(side: _Side) -> str:
    return side.label if side.commit else f"the {side.label}"


def _resolve_side(
    project: Project, strategy_id: str, releases: list[Release], revision: str
) -> _Side:
    """A release version, ``latest``/``previous`` or any git revision (releases win a tie)."""
    if revision in (LATEST, PREVIOUS) or any(r.version == revision for r in releases):
        chosen = select_release(releases, strategy_id, revision)
        return _Side(f"release {chosen.version} ({chosen.commit[:7]})", chosen.commit)
    commit = _commit_of(project, revision)
    if commit is None:
        known = ", ".join(r.version for r in releases) or "none"
        raise ReleaseError(
            f"unknown revision {revision!r}: neither a release of {strategy_id} "
            f"(released: {known}) nor a git revision"
        )
    return _Side(f"{revision} ({commit[:7]})", commit)


def _side_files(project: Project, strategy_id: str, side: _Side) -> dict[str, bytes]:
    folder = f"generated/{strategy_id}"
    if side.commit is None:
        directory = project.generated_dir / strategy_id
        if not directory.is_dir():
            return {}
        return {project.rel(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    return {
        path: _git(project, "cat-file", "blob", f"{side.commit}:./{path}")
        for path in _tracked_files(project, side.commit, folder)
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return {prefix.rstrip("."): shown}


def _pins(files: dict[str, bytes], strategy_id: str) -> dict[str, str]:
    path = f"generated/{strategy_id}/params.yaml"
    if path not in files:
        return {}
    params = _load_yaml(files[path], path)
    pins = params.get("pins") if isinstance(params, dict) else None
    return _flatten(pins) if isinstance(pins, dict) else {}


def side_file(project: Project, side: _Side, path: str) -> bytes | None:
    """A file of the project (``path`` relative to its root) as it is on ``side``; None where it
    does not exist there."""
    if side.commit is None:
        file = project.root / path
        return file.read_bytes() if file.is_file() else None
    return vcs.file_at(project.root, side.commit, path)


# where a side's evidence.json is, and its (evidence, params); None where it has none
Report = tuple[str | None, tuple[dict[str, Any], dict[str, Any]] | None]


def _report_of(project: Project, strategy_id: str, side: _Side, files: dict[str, bytes]) -> Report:
    """Where the side's evidence.json is and (evidence, params), or None without one."""
    path = f"generated/{strategy_id}/params.yaml"
    params = _load_yaml(files[path], path) if path in files else None
    if not isinstance(params, dict):
        return None, None
    backtest, strategy = params.get("backtest") or {}, params.get("strategy") or {}
    where = f"{backtest.get('reports_dir', 'reports')}/{strategy_id}/{strategy.get('version')}"
    raw = side_file(project, side, f"{where}/evidence.json")
    try:
        evidence = json.loads(raw) if raw is not None else None
    except ValueError:
        evidence = None
    return f"{where}/evidence.json", (evidence, params) if isinstance(evidence, dict) else None


def _metrics_section(strategy_id: str, before: Report, after: Report) -> list[str]:
    """The backtest's metrics on both sides (``_report_of`` each) and the inputs that changed."""
    from qcompile.comparison import text

    (old_where, old), (new_where, new) = before, after
    where = (
        new_where if new_where == old_where or old_where is None else f"{old_where}, {new_where}"
    )
    return text(old, new, where or f"reports/{strategy_id}/<version>/evidence.json")


def _gate_rules(files: dict[str, bytes], strategy_id: str) -> list[str]:
    """The passport's gate requirements (``gate phase: requirement``) and waivers in force
    (``waived requirement: ...``), as lines to compare."""
    path = f"generated/{strategy_id}/passport.yaml"
    if path not in files:
        return []
    passport = _load_yaml(files[path], path)
    lifecycle = passport.get("lifecycle") if isinstance(passport, dict) else None
    if not isinstance(lifecycle, dict):
        return []
    gates = lifecycle.get("gates") if isinstance(lifecycle.get("gates"), dict) else {}
    rules = [f"gate {phase}: {r}" for phase, listed in gates.items() for r in listed or []]
    return rules + [f"waived {w}" for w in lifecycle.get("waived") or []]


def _text_lines(data: bytes) -> list[str] | None:
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _unified(path: str, old: bytes | None, new: bytes | None, a: _Side, b: _Side) -> list[str]:
    """git-style unified diff of one file; /dev/null for the absent side."""
    old_name = f"a/{path}" if old is not None else "/dev/null"
    new_name = f"b/{path}" if new is not None else "/dev/null"
    old_lines, new_lines = _text_lines(old or b""), _text_lines(new or b"")
    if old_lines is None or new_lines is None:
        return [f"Binary files {old_name} and {new_name} differ\n"]
    out = []
    for line in difflib.unified_diff(
        old_lines, new_lines, old_name, new_name, a.label, b.label, n=3
    ):
        if line.endswith("\n"):
            out.append(line)
        else:  # the file's last line has no newline: say so, as diff and git do
            out.append(line + "\n\\ No newline at end of file\n")
    return out


def diff(project: Project, strategy_id: str, from_rev: str | None, to_rev: str | None) -> str:
    """Changed pins, then a unified diff of every differing file in generated/<id>/.

    ``from_rev`` defaults to the latest release, ``to_rev`` to the working tree.
    """
    strategy_id = resolve_strategy(project, strategy_id)
    _require_repository(project)
    releases = load_history(project, strategy_id)
    if from_rev is None and not releases:
        raise ReleaseError(
            f"no releases of {strategy_id} yet to compare with: pass --from REV (a git revision; "
            "--from HEAD compares the working tree with the last commit)"
        )
    a = _resolve_side(project, strategy_id, releases, from_rev or LATEST)
    b = WORKING_TREE if to_rev is None else _resolve_side(project, strategy_id, releases, to_rev)
    old, new = _side_files(project, strategy_id, a), _side_files(project, strategy_id, b)
    if not old and not new:
        raise ReleaseError(
            f"generated/{strategy_id}/ exists in neither {_phrase(a)} nor {_phrase(b)}"
        )
    changed = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
    reports = (_report_of(project, strategy_id, a, old), _report_of(project, strategy_id, b, new))
    if not changed:
        same = f"no differences in generated/{strategy_id}/ between {_phrase(a)} and {_phrase(b)}\n"
        first, second = reports
        if first[1] is not None and second[1] is not None and first[1][0] != second[1][0]:
            # the same build, reports that differ (re-run by another qcompile, or by hand)
            return same + "".join(_metrics_section(strategy_id, first, second))
        return same

    old_pins, new_pins = _pins(old, strategy_id), _pins(new, strategy_id)
    keys = list(new_pins) + [k for k in old_pins if k not in new_pins]
    pin_lines = [
        f"  {key}: {old_pins.get(key, '(none)')} -> {new_pins.get(key, '(none)')}"
        for key in keys
        if old_pins.get(key) != new_pins.get(key)
    ]
    out = [f"{strategy_id}: {a.label} -> {b.label}\n", "\n"]
    out += ["pins:\n", *(line + "\n" for line in pin_lines)] if pin_lines else ["pins: unchanged\n"]
    # what a reviewer must not miss: a waiver granted or lifted, a gate requirement added/removed
    old_rules, new_rules = _gate_rules(old, strategy_id), _gate_rules(new, strategy_id)
    rule_lines = [f"  - {r}\n" for r in old_rules if r not in new_rules] + [
        f"  + {r}\n" for r in new_rules if r not in old_rules
    ]
    if rule_lines:
        out += ["\n", "gates and waivers:\n", *rule_lines]
    out += ["\n", *_metrics_section(strategy_id, *reports), "\n", "files:\n"]
    for path in changed:
        status = "A" if path not in old else "D" if path not in new else "M"
        out.append(f"  {status} {path}\n")
    out.append("\n")
    for path in changed:
        out += _unified(path, old.get(path), new.get(path), a, b)
    return "".join(out)


__all__ = [
    "Release",
    "ReleaseError",
    "diff",
    "field_value",
    "history",
    "history_file",
    "load_history",
    "release",
    "release_fields",
    "resolve_strategy",
    "select_release",
]
