"""qcompile: strategy operations as code for small quant teams.

This module stays import-light (no Hydra, no polars) so that ``qcompile --help`` starts fast.
"""

__version__ = "0.1.0"
