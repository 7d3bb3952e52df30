"""Where `serve`'s options come from: flag > `STREAMING_ASR_*` variable > `--config` TOML file > default.

Every option of the `serve` parser (server, model and engine flags alike) can be set by an
environment variable named `STREAMING_ASR_` + its name in upper snake case (`--max-sessions` ->
`STREAMING_ASR_MAX_SESSIONS`) or by a key in snake case in the TOML file. Values from either go
through the flag's own type and choices, so a bad value is the same clear error as a bad flag.
The effective configuration, with each value's source, is logged at start-up (secrets masked).
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

ENV_PREFIX = "STREAMING_ASR_"
SECRETS = ("token", "metrics_token")
SKIP = ("help", "config")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def layer_defaults(
    parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Set `parser`'s defaults from the TOML file and the environment; {dest: source} of every option."""
    environ = os.environ if environ is None else environ
    file_values = _read_file(parser, _config_path(argv))
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in SKIP}
    unknown = sorted(set(file_values) - set(actions))
    if unknown:
        parser.error(f"--config: unknown option(s) {', '.join(unknown)} (keys are the options in snake case)")
    sources: dict[str, str] = {}
    for dest, action in actions.items():
        layered = [("file", file_values[dest])] if dest in file_values else []
        if ENV_PREFIX + dest.upper() in environ:
            layered.append(("env", environ[ENV_PREFIX + dest.upper()]))
        for source, raw in layered:
            parser.set_defaults(**{dest: _convert(parser, action, raw, source)})
            sources[dest] = source
        if any(_given(opt, argv) for opt in action.option_strings):
            sources[dest] = "flag"
        sources.setdefault(dest, "default")
    return sources


def describe(args: argparse.Namespace, sources: Mapping[str, str]) -> str:
    """`key=value` pairs (values as JSON) of every option, then which came from flags, env and file;
    secrets masked."""
    parts = []
    for dest in sorted(sources):
        value = getattr(args, dest, None)
        shown = "***" if dest in SECRETS and value else value
        parts.append(f"{dest}={json.dumps(shown, default=str)}")
    for source in ("flag", "env", "file"):
        given = ",".join(sorted(d for d, s in sources.items() if s == source))
        parts.append(f"set_by_{source}={json.dumps(given)}")
    return " ".join(parts)


def _config_path(argv: Sequence[str]) -> str | None:
    for i, word in enumerate(argv):
        if word == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--config="):
            return word.split("=", 1)[1]
    return os.environ.get(ENV_PREFIX + "CONFIG")


def _read_file(parser: argparse.ArgumentParser, path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        parser.error(f"--config {path}: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        parser.error(f"--config {path}: not valid TOML: {exc}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _given(option: str, argv: Sequence[str]) -> bool:
    return any(word == option or word.startswith(option + "=") for word in argv)


def _convert(parser: argparse.ArgumentParser, action: argparse.Action, raw: Any, source: str) -> Any:
    """`raw` (a TOML value or an environment string) through the flag's own type and choices."""
    where = f"{'--config key' if source == 'file' else 'environment variable'} " + (
        action.dest if source == "file" else ENV_PREFIX + action.dest.upper()
    )
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        text = str(raw).strip().lower()
        if isinstance(raw, bool) or text in TRUE + FALSE:
            flag = raw if isinstance(raw, bool) else text in TRUE
            return flag if isinstance(action, argparse._StoreTrueAction) else not flag
        parser.error(f"{where}: expected true or false, got {raw!r}")
    if isinstance(raw, bool):
        raw = "on" if raw else "off"  # TOML booleans for on|off flags
    text = str(raw)
    try:
        value = action.type(text) if callable(action.type) else text
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"{where}: {exc or 'invalid value'} ({text!r})")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{where}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    return value
