"""`--log-format json`: one JSON object per log record, with the keys of the `key=value` lines.

Session events are logged as `session=ID event=NAME k=v ...` (values JSON-quoted when strings);
the JSON form keeps exactly those keys, typed, plus `time`, `level` and `logger`, so a log collector
needs no parsing rules. Records that are not key=value lines carry their text as `message`.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        pairs = _PAIR.findall(text)
        if pairs and _PAIR.sub("", text).strip() == "":
            out.update((key, _value(raw)) for key, raw in pairs)
        else:
            out["message"] = text
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def use_json_logs() -> None:
    """Switch every root handler to the JSON formatter."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
