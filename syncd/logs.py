"""Logging: structlog for syncd's own events, the standard library routed through it.

One handler on the root logger renders everything, syncd's events and those of
exchangelib, requests_ntlm, urllib3, httpx and httpcore alike: JSON lines when stderr
is not a terminal (or `format: json`), readable lines on a terminal.

Secrets never reach the output. `register_secret` remembers the configured secrets
(the configuration loader registers them); every rendered value containing one is
scrubbed, and so are `Authorization:`/`ApiKey:` header values and `access_token` /
`client_secret` / `password` fields, whoever logged them and at whatever level.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

import structlog

MASK = "***"
MIN_SECRET_LENGTH = 4   # shorter values are not secrets worth the name; they are not masked

# Keys whose value is a secret whatever it holds.
SECRET_KEYS = frozenset(
    {
        "api_key", "apikey", "password", "passwd", "client_secret", "access_token",
        "refresh_token", "id_token", "token", "authorization", "proxy-authorization",
        "secret", "client_assertion", "private_key",
    }
)

# Libraries whose DEBUG output is useful only when asked for: at other levels they
# log warnings and worse, so a request log does not drown syncd's own lines.
CHATTY_LOGGERS = ("exchangelib", "requests_ntlm", "urllib3", "httpx", "httpcore", "spnego", "requests_oauthlib",
                  "oauthlib", "apscheduler", "alembic", "msal")

_HEADER_RE = re.compile(
    r"(?i)\b(authorization|proxy-authorization|apikey|api-key|x-api-key|cookie|set-cookie)"
    r"(['\"]?\s*[:=]\s*['\"]?)([^'\"\r\n,}&]+)"
)
# Fields as they appear in JSON, a dict's repr or a form body: `"access_token": "..."`,
# `'password': '...'`, `client_secret=...`. A bare `password: x` is prose (an error
# message naming the key) and is left alone; configured values are masked regardless.
_FIELD_RE = re.compile(
    r"(?i)\b(access_token|refresh_token|id_token|client_secret|api_key|password)"
    r"(\s*=\s*|['\"]\s*:\s*['\"]?)([^'\"\s,}&<]+)"
)
# A JSON Web Token (an access token, a signed client assertion): three base64url parts.
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
# Form fields of a token request that carry a credential.
_ASSERTION_RE = re.compile(r"(?i)\b(client_assertion|assertion)(\s*=\s*|['\"]\s*:\s*['\"]?)([^'\"\s,}&<]+)")
# XML elements that carry secrets (SOAP bodies printed at DEBUG).
_XML_RE = re.compile(r"(?i)(<(?:\w+:)?(?:password|client_secret|access_token)>)([^<]*)(</)")

_secrets: set[str] = set()
_handler: logging.Handler | None = None


def register_secret(value: object) -> None:
    """Remember a secret string so no log line ever shows it (nor its URL-encoded forms).

    Accepts a str, a pydantic SecretStr, or None (ignored). Values shorter than
    MIN_SECRET_LENGTH are ignored."""
    if value is None:
        return
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    text = str(value)
    if len(text) < MIN_SECRET_LENGTH:
        # Masking every "a" or "s" would garble all output and protect nothing.
        return
    _secrets.add(text)
    for variant in (quote(text, safe=""), quote_plus(text)):
        _secrets.add(variant)


def forget_secret(value: str) -> None:
    """Stop masking one value (a token that has expired and will never be used again)."""
    for variant in (value, quote(value, safe=""), quote_plus(value)):
        _secrets.discard(variant)


def forget_secrets() -> None:
    """Forget every registered secret (for tests)."""
    _secrets.clear()


def scrub_text(text: str) -> str:
    """`text` with every registered secret and every credential-looking field masked."""
    if not text:
        return text
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _HEADER_RE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = _FIELD_RE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = _XML_RE.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    text = _ASSERTION_RE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = _JWT_RE.sub(MASK, text)
    return text


def scrub_value(value: Any, key: str | None = None) -> Any:
    """A log value made safe to print: secret keys masked, strings scrubbed, containers walked.

    Objects other than plain scalars are rendered with str() first, since their repr may
    carry a header or a token."""
    if key is not None and key.lower() in SECRET_KEYS and value not in (None, ""):
        return MASK
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {k: scrub_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_value(v) for v in value]
    return scrub_text(str(value))


def scrub_processor(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: every value of the event scrubbed (see `scrub_value`)."""
    return {k: scrub_value(v, k) for k, v in event_dict.items()}


class ScrubFilter(logging.Filter):
    """Scrubs a standard-library record's message, arguments and traceback in place.

    Sits on the root handler, so it sees records propagated from every library logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict) and hasattr(record, "_logger"):
            return True  # a structlog event: scrub_processor handles it field by field
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string must not lose the line
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = scrub_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the write (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _exc_text(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Records formatted by ScrubFilter carry their traceback as exc_text; keep it."""
    record = event_dict.get("_record")
    if record is not None and getattr(record, "exc_text", None) and "exception" not in event_dict:
        event_dict["exception"] = record.exc_text
    return event_dict


def _use_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Set up structlog and the standard library's logging for the whole process.

    `level`: debug | info | warning | error; `fmt`: auto | json | console. May be called
    again (the previous syncd handler is replaced; other handlers are left alone)."""
    global _handler
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    as_json = _use_json(fmt, sys.stderr)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=_use_colors())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _exc_text],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_processor,
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    handler.addFilter(ScrubFilter())

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _use_colors() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger bound to `initial` values."""
    return structlog.get_logger(name, **initial)


def secrets_in(values: Iterable[str]) -> list[str]:
    """The registered secrets that occur in any of `values` (for tests and self-checks)."""
    return [s for s in _secrets if any(s in v for v in values)]
