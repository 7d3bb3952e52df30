"""The wheel builds, installs without the source tree (into a target directory; torch and the other
dependencies are the environment's), and `streaming-asr serve` runs from it with the page included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, STANDIN_MODEL


@pytest.mark.standin
def test_wheel_installs_and_serves_the_page(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("streaming_asr-*.whl"))
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import streaming_asr, clients; print(streaming_asr.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(target))  # the installed copy, not the checkout
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streaming_asr",
            "serve",
            "--model",
            str(STANDIN_MODEL),
            "--port",
            "0",
            "--device",
            "cpu",
            "--max-load",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        port = int(line.split()[3].rsplit(":", 1)[1].split("/")[0])
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
        assert b"<html" in page.lower() and urllib.request.urlopen(f"http://127.0.0.1:{port}/app.js").status == 200
        for _ in range(100):
            try:
                ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready").read())
                break
            except urllib.error.HTTPError:
                time.sleep(0.1)
        assert ready == {"ready": True}
    finally:
        proc.terminate()
        proc.wait(30)
