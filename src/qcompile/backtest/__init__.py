"""The backtest runtime: data loading, the engine (a readable reference and a
compiled equal), metrics and the standard report.

Generated backtest harnesses call this package; it never imports the compiler.
"""
