"""The backtest engine: a readable reference loop and its compiled equal, parameter grids,
metrics, robustness, overfitting statistics, and the report (Markdown, HTML, evidence.json).

Generated backtest harnesses call ``runner.main``; nothing here imports the compiler.
"""
