"""The signal registry: signals are plain functions registered with a name and a version.

A signal takes a polars frame of bars (one row per symbol and timestamp, sorted) and keyword
parameters, and returns the frame with a ``signal`` column holding the target position
(-1 short, 0 flat, 1 long) decided at that bar's close. It may name a ``grid`` companion that
returns the targets of many parameter combinations at once, as an int8 array of shape
(combinations, bars), computing shared indicators once; it must equal calling the signal per
combination (the tests check the built-in ones), and it is part of the signal's pinned source. A
grid companion works symbol by symbol, so the grid engine may call it on blocks of symbols. An
``arrays`` companion gives the same targets without a frame: it takes the bar columns as numpy
arrays (``columns["close"]`` float64, ``columns["timestamp"]`` int64; rows sorted by symbol then
time), ``starts`` (the first row of each symbol's run, then the row count) and the parameters,
and returns one target per row. The production runner calls it at each bar close when there is
one; the signal itself should be written as a call of it, so that both are one computation. A
``valid`` companion takes a parameter combination and returns why it is meaningless (a fast
average not faster than the slow one), or None: the robustness grid and the walk-forward skip
such combinations instead of reporting their empty backtests. The
compiler never imports this module: it finds ``@signal(...)`` decorators by reading the source,
and pins a hash of it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SignalFunction = Callable[..., Any]


@dataclass(frozen=True)
class SignalSpec:
    name: str
    version: str
    function: SignalFunction
    grid: Callable[..., Any] | None = None
    arrays: Callable[..., Any] | None = None
    valid: Callable[[dict[str, Any]], str | None] | None = None

    def invalid(self, params: dict[str, Any]) -> str | None:
        """Why ``params`` is a meaningless combination for this signal, or None."""
        return None if self.valid is None else self.valid(params)


_REGISTRY: dict[str, SignalSpec] = {}


class SignalError(LookupError):
    """A signal reference that the registry cannot satisfy."""


def signal(
    name: str,
    version: str,
    grid: Callable[..., Any] | None = None,
    arrays: Callable[..., Any] | None = None,
    valid: Callable[[dict[str, Any]], str | None] | None = None,
) -> Callable[[SignalFunction], SignalFunction]:
    """Register ``function`` as signal ``name`` at semantic ``version`` (with its ``grid``,
    ``arrays`` and ``valid`` companions)."""

    def register(function: SignalFunction) -> SignalFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.function.__qualname__ != function.__qualname__:
            raise SignalError(f"signal {name!r} is registered twice")
        _REGISTRY[name] = SignalSpec(name, version, function, grid, arrays, valid)
        return function

    return register


def load_packages(packages: list[str], search: Sequence[Path] = ()) -> None:
    """Import every module of the given packages so that their signals register.

    ``search`` goes to the front of the import path first: a team's package usually sits in the
    project root (or its src/), which is where the compiler looked for it too."""
    for directory in reversed(search):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    for package_name in packages:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(getattr(package, "__path__", []), package_name + "."):
            importlib.import_module(module.name)


def get_signal(
    name: str, version: str | None, packages: list[str], search: Sequence[Path] = ()
) -> SignalSpec:
    """The registered signal, checked against the version the strategy pinned (None: the
    installed one, whatever its version, for the runtime's own self-test)."""
    try:
        load_packages(packages, search)
    except ModuleNotFoundError as error:
        raise SignalError(f"signal package not importable: {error.name}") from None
    spec = _REGISTRY.get(name)
    if spec is None:
        raise SignalError(f"no signal named {name!r} in {', '.join(packages)}")
    if version is not None and spec.version != version:
        raise SignalError(
            f"signal {name!r} is at version {spec.version}, the strategy pins {version}"
        )
    return spec
