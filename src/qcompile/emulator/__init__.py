"""Local emulator of the TickDB market-data vendor, with scriptable faults (docs/emulator.md).

Runtime code, used by the live runner and its tests: it must not import the compiler (build,
compose, validate, ...).
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
