"""Secret references in deployment config, resolved from the environment at run time.

Config never holds a secret: it holds a reference such as ``${oc.env:TICKDB_API_KEY}`` (the
OmegaConf spelling, so the same file reads the same in Hydra) and the runner resolves it when it
starts. Resolved values must never reach a log line or an error message, hence :func:`redact`
and :class:`RedactingFilter`.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Iterable, Mapping

from qcompile.errors import QcompileError

# The whole value must be one reference; NAME follows POSIX environment variable rules.
_REFERENCE = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)(?:,(.*))?\}", re.DOTALL)
_EMBEDDED = re.compile(r"\$\{oc\.env:")
REDACTED = "***"
DEFAULT_LOGGERS = ("qcompile", "websocket", "urllib3")


class SecretError(QcompileError):
    """A secret reference cannot be resolved. The message never contains a secret value."""


def reference_name(value: str | None) -> str | None:
    """NAME if ``value`` is exactly ``${oc.env:NAME}`` or ``${oc.env:NAME,default}``, else None."""
    if value is None:
        return None
    match = _REFERENCE.fullmatch(value)
    return match.group(1) if match else None


def resolve(value: str | None, env: Mapping[str, str] = os.environ, *, what: str) -> str | None:
    """The value ``value`` stands for: the environment variable it references, or itself.

    ``what`` names the config key (``alerts[0].url``) for the error message. A default after the
    comma is used when the variable is unset; as in OmegaConf, surrounding whitespace and quotes
    are stripped and ``null`` means None. A reference embedded in a longer string (``redis://
    ${oc.env:HOST}``) is an error rather than a literal: passing it on unresolved would fail later
    and far less clearly.
    """
    if value is None:
        return None
    match = _REFERENCE.fullmatch(value)
    if match is None:
        if _EMBEDDED.search(value):
            raise SecretError(
                f"{what}: a ${{oc.env:...}} reference must be the whole value; put the complete "
                "value in the environment variable instead"
            )
        return value
    name, default = match.group(1), match.group(2)
    if name in env:
        return env[name]
    if default is None:
        raise SecretError(f"{what}: environment variable {name} is not set")
    return _parse_default(default)


def _parse_default(text: str) -> str | None:
    text = text.strip()
    if text == "null":
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    # Longest first, so that a secret containing another one is hidden whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a log record so that none of ``secrets`` survives formatting.

    The message is formatted here (``record.getMessage()``) and stored back with empty args, so a
    secret passed as an argument (``log.info("url %s", url)``) is caught as well as one in the
    format string. Traceback and stack text are pre-rendered and redacted the same way; the
    standard :class:`logging.Formatter` uses that text instead of rendering its own.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if s}
        self.installed_on: list[logging.Filterer] = []

    def add(self, *secrets: str) -> None:
        """Also hide these (a secret resolved after the filter was installed)."""
        self.secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad format args: logging would print msg and args raw to stderr
            message = f"{record.msg} (log call with unformattable arguments)"
        record.msg, record.args = redact(message, self.secrets), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True

    def uninstall(self) -> None:
        """Remove this filter from everything :func:`install_redaction` added it to."""
        for target in self.installed_on:
            target.removeFilter(self)
        self.installed_on.clear()


def install_redaction(
    secrets: Iterable[str], logger_names: Iterable[str] = DEFAULT_LOGGERS
) -> RedactingFilter:
    """Add one :class:`RedactingFilter` for ``secrets`` where records are emitted.

    A logger's own filters only see records logged on that very logger, not those propagating
    from its children (``urllib3.connectionpool``), so the filter goes on handlers: every handler
    of the root logger (where child records end up) and of each named logger (which may have
    ``propagate = False``); and on the named loggers themselves, which covers what is logged
    directly on them whichever handler, present or future, emits it. Other handlers added later
    are not covered: call this after logging is configured, or add the returned filter to them.
    """
    redacting = RedactingFilter(secrets)
    targets: list[logging.Filterer] = list(logging.getLogger().handlers)
    for name in logger_names:
        logger = logging.getLogger(name)
        targets.extend([logger, *logger.handlers])
    for target in targets:
        if redacting not in target.filters:
            target.addFilter(redacting)
            redacting.installed_on.append(target)
    return redacting
