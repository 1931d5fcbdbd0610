"""Logging set-up for entry points only (libraries just use module loggers).

Two formats, chosen by `--log-format` or the environment variable
`TRUSTEE_LOG_FORMAT` (`text`, the default, or `json`):

- `text`: `<time> <LEVEL> <logger>: <message>`, plus ` [request_id=<id>]`
  while a request is being served;
- `json`: one JSON object per line with `ts` (UTC, RFC 3339), `level`,
  `logger`, `message`, `service`, `request_id` (when serving a request)
  and `exc` (a formatted traceback, when there is one).

The request id comes from `trustee_common.requestid` (a context variable),
so every line logged while serving a request carries it, whichever module
logs it. The level comes from `TRUSTEE_LOGLEVEL` (default INFO).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys

from trustee_common.requestid import current_request_id

FORMATS = ("text", "json")
FORMAT_ENV = "TRUSTEE_LOG_FORMAT"
LEVEL_ENV = "TRUSTEE_LOGLEVEL"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(request_suffix)s"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` and `request_suffix` (text format) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = current_request_id()
        record.request_id = rid
        record.request_suffix = f" [request_id={rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_format(flag: str | None = None) -> str:
    """The format asked for by the flag, else the environment, else `text`; unknown names fall back to `text`."""
    chosen = (flag or os.environ.get(FORMAT_ENV) or "text").lower()
    return chosen if chosen in FORMATS else "text"


def setup_logging(default: str = "INFO", *, fmt: str | None = None, service: str | None = None) -> None:
    """Configure the root handler (replacing an earlier set-up); level from `TRUSTEE_LOGLEVEL`."""
    level = os.environ.get(LEVEL_ENV, default).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format(fmt) == "json":
        handler.setFormatter(JsonFormatter(service or os.path.basename(sys.argv[0]) or "trustee"))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler], force=True)
