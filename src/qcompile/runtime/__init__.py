"""The production runtime: the runner that generated ``runner.py`` files and ``qcompile run``
start (feed, decisions, durable state, broker, alerts), its control from outside (stop,
heartbeat, state check) and the recorded safety self-test.

May import: the signal library (the pinned signal), research's data contract (``research.data``),
the emulator and market data (feeds), and the shared modules. Never the compiler, lifecycle,
operations or the CLI: a production process loads no compiler code.
"""
