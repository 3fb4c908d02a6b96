"""The backtest runtime: data loading, the vectorised engine, metrics and the standard report.

Generated backtest harnesses call this package; it never imports the compiler.
"""
