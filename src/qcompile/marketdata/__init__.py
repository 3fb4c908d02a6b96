"""Market-data access: the TickDB REST client, bar intervals, and the downloader into the local
Parquet layout. Used by research (``qcompile download``), the runtime (the feed's REST back-fill)
and the emulator.

May import: the shared modules only.
"""
