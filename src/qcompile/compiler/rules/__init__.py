"""The lifecycle rules the compiler applies (source document §2, §5, §6).

``gates``: the phases, the requirement vocabulary and which requirements each phase's gate
needs; ``checklist``: the deployment checklist evaluated from evidence and sign-offs;
``signoffs``: what a sign-off covers and whether it is stale; ``review_due``: the one-year rule;
``evidence``: the committed JSON evidence the gates and the checklist read, checked as it is read.
They live beneath the compiler because validate and the build apply them; the commands that move
a strategy (``qcompile signoff``, ``promote``, ``release``) live in ``qcompile.lifecycle`` and
call the build, never the other way round.

May import: the compiler's schema and the shared modules.
"""
