"""Local emulator of the TickDB market-data vendor, with scriptable faults (docs/emulator.md).

Used by the runtime (``qcompile run --feed emulator``, the self-test) and the tests, beside the
runtime rather than inside it: it is the vendor's side of the protocol, not qcompile's.

May import: market data (bar intervals) and the shared modules; never the compiler, research,
the runtime, lifecycle or operations.
"""

from qcompile.emulator.replay import load_bars, ticks_from_bars
from qcompile.emulator.scenario import Fault, Scenario, ScenarioError, load_scenario
from qcompile.emulator.server import Emulator, Stats

__all__ = [
    "Emulator",
    "Fault",
    "Scenario",
    "ScenarioError",
    "Stats",
    "load_bars",
    "load_scenario",
    "ticks_from_bars",
]
