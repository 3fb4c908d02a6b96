"""qcompile's built-in signal library. Import ``signal`` to register a team's own signals."""

from qcompile.signals.registry import SignalError, SignalSpec, get_signal, load_packages, signal

__all__ = ["SignalError", "SignalSpec", "get_signal", "load_packages", "signal"]
