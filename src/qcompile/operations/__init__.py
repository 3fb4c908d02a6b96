"""Operations: what a team runs around strategies in production (source document §6).

``review`` (the weekly live-versus-backtest review), ``refresh`` (the quarterly re-run of every
production backtest), ``retro`` (what broke in a month), ``status`` (phases, pins, review dates
and runner liveness), ``dashboard`` (the read-only live page per running strategy) and ``watch``
(the watchdog that alerts when a runner's heartbeat goes stale, and ``qcompile alert test``).

May import: the compiler (to know what is in production and its parameters), lifecycle (a
refresh demotes a diverged strategy), research (the backtest and its statistics), the runtime's
read side (state stores, journals, heartbeats, alert sinks) and the shared modules. Nothing
imports operations but the CLI.
"""
