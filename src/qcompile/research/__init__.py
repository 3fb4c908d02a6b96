"""Research: the data contract, the backtest engine and its reports, sweeps.

``data`` loads bars and enforces the data contract (shared with the runtime, which checks every
message against it) and ``datalayout`` says where a data source's files live (shared with the
compiler's fingerprint); ``calendar`` knows which sessions a market held, for the build's gap
check; ``dataimport`` brings outside CSV or Parquet files into that layout,
checked against the contract before anything is written; ``backtest/`` is the engine (a
readable reference loop and its compiled equal), metrics, robustness and the report;
``sweep/`` runs parameter-sensitivity sweeps; ``workflows`` holds ``qcompile backtest``,
``qcompile download`` and ``qcompile data import``.

May import: the signal library, market data and the shared modules; ``workflows`` and ``sweep/``
(the research commands, which compile a strategy first) may also import the compiler. The
library part (``data``, ``datalayout``, ``backtest/``) never imports the compiler, so the
compiler can pin the data layout without a cycle. Never the runtime, lifecycle, operations or
the CLI.
"""
