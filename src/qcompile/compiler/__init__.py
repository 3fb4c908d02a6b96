"""The compiler: conf/ in, generated/ out, one module per stage in the order data flows.

    read -> compose -> validate (+ schema) -> lock (+ fingerprint) -> plan
         -> render (+ quoting, templates/, generator) -> write (+ stager)

``build`` runs the stages and owns generated/manifest.json; ``rules/`` holds the lifecycle rules
validate and the gates apply (phases and gates, the deployment checklist, what a sign-off covers,
the one-year review); ``views`` and ``reference`` read what the stages produce (``qcompile
show``/``list``, the config reference).

May import: the shared modules (``errors``, ``hashing``, ``project``, ``templating``,
``alertcatalog``), the signal library's source reader (``signals.source``, never the signals
themselves) and research's data layout and contract (``research.datalayout``,
``research.data``), to pin and check what a strategy reads. Never the runtime,
the emulator, market data, research's engine, lifecycle commands, operations or the CLI.
"""
