"""qcompile's built-in signal library, and the registry every signal package uses.

Import ``signal`` to register a team's own signals. ``registry`` holds the decorator and the
pinned lookup, ``source`` reads a package's signals without importing them (the compiler pins
them with it), ``pinning`` loads the pinned signal for the backtest and the runner; ``trend`` and
``reversion`` are the built-in signals, ``frames`` their shared per-symbol helpers.

The package keeps its top-level name although it belongs to research: configs name it
(``project.signal_packages: [qcompile.signals]``) and every passport pins its signals by module
(``qcompile.signals.trend``), so moving it would change every strategy's pinned identity.

May import: the shared modules only.
"""

from qcompile.signals.registry import SignalError, SignalSpec, get_signal, load_packages, signal

__all__ = ["SignalError", "SignalSpec", "get_signal", "load_packages", "signal"]
