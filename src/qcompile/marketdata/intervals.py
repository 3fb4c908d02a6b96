"""The vendor's documented bar intervals, in milliseconds (shared by the emulator and the runner).

A month is taken as its shortest length (28 days) so that the emulator's four ticks of a monthly
bar stay inside every month, February included; the runner does not trade monthly bars.
"""

MINUTE_MS = 60_000
DAY_MS = 86_400_000
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": DAY_MS,
    "1w": 7 * DAY_MS,
    "1M": 28 * DAY_MS,
}
