"""The commands that move a strategy through its lifecycle: sign-offs, promotion, releases.

``signoff`` records who signed which artefact (and promotes a strategy whose next gate passes),
``conf_edit`` writes those records into the strategy's own YAML with comments kept, ``releases``
keeps the append-only release history and diffs releases. They run after the compiler: each one
compiles (``compiler.build``) to know what it signs or releases.

May import: the compiler and the shared modules. Never the runtime, research, operations or the
CLI; the compiler never imports this package (its rules live in ``compiler.rules``).
"""
