"""The deployment kit's files say what the server does: probe paths it serves, a grace period longer
than its drain, env names it reads. (No Docker engine here: the Dockerfile is checked, not built.)"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import yaml
from helpers import REPO

from streaming_asr.cli import build_parser

DEPLOY = REPO / "deploy"


def serve_dests() -> set[str]:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    return {a.dest for a in serve._actions if a.option_strings}


def test_manifests_parse_and_match_the_server(standin_server: Any) -> None:
    docs = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert pod["terminationGracePeriodSeconds"] > float(env["STREAMING_ASR_DRAIN_TIMEOUT"])
    dests = serve_dests()
    for name in env:  # every variable is one the server reads
        assert name.startswith("STREAMING_ASR_") and name[len("STREAMING_ASR_") :].lower() in dests, name
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert urllib.request.urlopen(standin_server.http_url + path).status == 200, path
    metric = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric in urllib.request.urlopen(standin_server.http_url + "/metrics").read().decode()


def test_dockerfile_uses_what_exists() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["streaming-asr", "serve"]' in text and "USER asr" in text
    assert re.search(r"HEALTHCHECK .*\n.*?/health/live", text)
    for name in re.findall(r"STREAMING_ASR_([A-Z_]+)=", text):
        assert name.lower() in serve_dests(), name
    assert '"torch==2.13.0"' in text  # the CPU wheel, pinned as in .ci/run
