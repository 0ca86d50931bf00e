"""Logging setup: structlog events rendered as one JSON object per line or as coloured console lines.

Everything goes to stderr. Records from the standard ``logging`` module (asyncio's own warnings, for
example) are rendered by the same renderer, so a log consumer never sees two formats in one stream.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Literal

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("console", "json")
LogFormat = Literal["console", "json"]


def default_format(stream: IO[str] | None = None) -> LogFormat:
    """Console when a person is watching (stderr is a terminal), JSON lines for machines otherwise."""
    stream = sys.stderr if stream is None else stream
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(level: str = "info", fmt: LogFormat | None = None, stream: IO[str] | None = None, *,
                      route_stdlib: bool = True) -> None:
    """Configure structlog (and, with ``route_stdlib``, route stdlib logging through the same renderer).
    Safe to call again."""
    stream = sys.stderr if stream is None else stream
    fmt = fmt or default_format(stream)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        exc_processors: list[structlog.typing.Processor] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_wants_colour(stream))
        exc_processors = []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            *exc_processors,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    if not route_stdlib:
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exc_processors, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level, timestamper],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_moldau", False):
            root.removeHandler(old)
    handler._moldau = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.INFO))


def _wants_colour(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
