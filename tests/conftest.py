"""Fixtures: real servers on 127.0.0.1 (stand-in model for recognition, tiny random model for plumbing)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import STANDIN_MODEL, ServerHandle, start_server_thread  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not STANDIN_MODEL.is_dir():
        skip = pytest.mark.skip(reason=f"stand-in model not found at {STANDIN_MODEL}")
        for item in items:
            if "standin" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def standin_server() -> Iterator[ServerHandle]:
    handle = start_server_thread("standin")
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def server_factory() -> Iterator[Callable[..., ServerHandle]]:
    handles: list[ServerHandle] = []

    def make(model: str = "standin", **settings: Any) -> ServerHandle:
        handle = start_server_thread(model, **settings)
        handles.append(handle)
        return handle

    yield make
    for h in handles:
        h.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (TLS tests: https/wss straight to a server)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
