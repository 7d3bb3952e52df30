"""Small helpers shared by the benches: paths, the tts-dev manifest, machine facts, result files, tables.

Kept free of torch and of the package so a bench's client side stays light.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
STANDIN_MODEL = SHARED / "models" / "tts-ctc-small"
TTS_DEV = SHARED / "data" / "tts-dev"
RESULTS = REPO / "bench" / "results"


def tts_dev_rows() -> list[dict[str, Any]]:
    """Rows of tts-dev/manifest.tsv with `wav` as an absolute Path and `duration_s` as float."""
    with open(TTS_DEV / "manifest.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for r in rows:
        r["wav"] = TTS_DEV / r["wav"]
        r["duration_s"] = float(r["duration_s"])
    return rows


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare numbers across machines."""

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": version("torch"),
        "transformers": version("transformers"),
        "websockets": version("websockets"),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def write_results(name: str, data: Any) -> Path:
    """Write `data` as bench/results/<name>.json (pretty, UTF-8) and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats rounded, None as an em dash, bools as yes/no."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str]) -> str:
    """A GitHub markdown table. `columns`: keys to show, or {key: header}; cells go through `fmt`."""
    cols = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    lines = ["| " + " | ".join(cols.values()) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(k)) for k in cols) + " |")
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def update_readme(section: str, markdown: str) -> bool:
    """Replace README's text between `<!-- bench:SECTION -->` and `<!-- /bench:SECTION -->`."""
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- bench:{section} -->\n).*?(<!-- /bench:{section} -->)", re.S)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda m: m.group(1) + markdown.rstrip() + "\n" + m.group(2), text), encoding="utf-8")
    return True
