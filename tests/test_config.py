"""`serve` options from flags, STREAMING_ASR_* variables and a TOML file, and JSON logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import STANDIN_MODEL

from streaming_asr.cli import build_parser
from streaming_asr.logformat import JsonFormatter
from streaming_asr.server.options import describe, layer_defaults


def parse(argv: list[str], environ: dict[str, str]) -> tuple[Any, dict[str, str]]:
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    sources = layer_defaults(serve, argv, environ)
    return parser.parse_args(["serve", *argv]), sources


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "asr.toml"
    cfg.write_text(
        "max_sessions = 5\nidle_timeout = 12.5\nfeature_reuse = false\nvosk_root = true\n"
        'precision = "int8"\nmax_unstarted = 9\n'
    )
    env = {"STREAMING_ASR_MAX_SESSIONS": "7", "STREAMING_ASR_TOKEN": "s3cret", "STREAMING_ASR_MAX_BATCH": "3"}
    args, sources = parse(["--config", str(cfg), "--max-unstarted", "4"], env)
    assert (args.max_sessions, sources["max_sessions"]) == (7, "env")  # env beats file
    assert (args.idle_timeout, sources["idle_timeout"]) == (12.5, "file")
    assert (args.max_unstarted, sources["max_unstarted"]) == (4, "flag")  # flag beats file
    assert args.feature_reuse is False and args.vosk_root is True and args.precision == "int8"
    assert (args.max_batch, args.token, sources["port"]) == (3, "s3cret", "default")
    line = describe(args, sources)
    assert "s3cret" not in line and 'token="***"' in line and "max_sessions=7" in line


@pytest.mark.parametrize(
    "env,file,words",
    [
        ({"STREAMING_ASR_MAX_SESSIONS": "many"}, "", "STREAMING_ASR_MAX_SESSIONS"),
        ({"STREAMING_ASR_PRECISION": "fp64"}, "", "not one of"),
        ({"STREAMING_ASR_VOSK_ROOT": "maybe"}, "", "true or false"),
        ({}, "max_sesions = 3\n", "unknown option(s) max_sesions"),
        ({}, "max_sessions = [\n", "not valid TOML"),
    ],
)
def test_bad_values_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], env: dict[str, str], file: str, words: str
) -> None:
    argv = []
    if file:
        (tmp_path / "c.toml").write_text(file)
        argv = ["--config", str(tmp_path / "c.toml")]
    with pytest.raises(SystemExit) as info:
        parse(argv, env)
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_json_log_lines_keep_the_keys() -> None:
    record = logging.LogRecord(
        "streaming_asr.server",
        logging.INFO,
        "x",
        1,
        "session=%s event=%s %s",
        ("ab12", "final", 'text="HELLO WORLD" start=0.5 words=2'),
        None,
    )
    out = json.loads(JsonFormatter().format(record))
    assert out["session"] == "ab12" and out["event"] == "final" and out["text"] == "HELLO WORLD"
    assert out["start"] == 0.5 and out["words"] == 2 and out["level"] == "INFO"
    plain = logging.LogRecord("x", logging.WARNING, "x", 1, "listening on %s", ("ws://h:1",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "listening on ws://h:1"


@pytest.mark.standin
def test_serve_reads_env_and_file_and_logs_json(tmp_path: Path) -> None:
    cfg = tmp_path / "asr.toml"
    cfg.write_text(f'model = "{STANDIN_MODEL}"\nmax_sessions = 3\nport = 0\nmax_load = 0\n')
    env = {
        **os.environ,
        "STREAMING_ASR_CONFIG": str(cfg),
        "STREAMING_ASR_MAX_UNSTARTED": "2",
        "STREAMING_ASR_TOKEN": "hidden-tok",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming_asr", "serve", "--device", "cpu", "--log-format", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        port = int(line.split()[3].rsplit(":", 1)[1].split("/")[0])
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())
        assert health["max_sessions"] == 3 and health["max_unstarted"] == 2
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    records = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    config = next(r for r in records if r.get("event") == "config")
    assert config["max_sessions"] == 3 and config["token"] == "***" and "hidden-tok" not in err
    assert "max_unstarted" in config["set_by_env"] and "max_sessions" in config["set_by_file"]
    assert all(x.startswith("{") for x in err.splitlines() if x.strip() and "it/s" not in x)
