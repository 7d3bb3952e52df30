"""Voice commands: the pure CommandMatcher, the TOML config, and one spoken command end to end."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from clients.command_matcher import Command, CommandHit, CommandMatcher, normalize, similarity
from clients.commands import ActionRunner, ConfigError, load_config
from clients.display import Console

REPO = Path(__file__).resolve().parents[1]
LIGHTS_ON = Command("turn on the lights")
LIGHTS_OFF = Command("turn off the lights")
MUSIC = Command("stop the music")


def fired(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.command.phrase for h in hits]


def test_normalize_and_similarity() -> None:
    assert normalize("Turn on, the  lights!") == "TURN ON THE LIGHTS"
    assert normalize("Don't café") == "DON'T CAFE"
    assert similarity("ABC", "ABC") == 1.0
    assert similarity("ABCD", "ABXD") == pytest.approx(0.75)
    assert similarity("", "ABC") == 0.0


@pytest.mark.parametrize(
    "heard",
    [
        "TERN ON THE LIHTES",  # what the stand-in model makes of espeak's "turn on the lights"
        "TURN ON THE LIGHS",
        "UH TURN ON DE LIGHTS PLEASE",  # inside longer speech
        "TURNON THE LIGHTS",  # a missed word boundary: window of phrase length - 1
    ],
)
def test_misspellings_within_threshold_fire(heard: str) -> None:
    matcher = CommandMatcher([LIGHTS_ON, MUSIC], threshold=0.75)
    hits = matcher.feed_final(0, heard, now=0.0)
    assert fired(hits) == ["turn on the lights"]
    assert hits[0].source == "final" and hits[0].segment == 0 and 0.75 <= hits[0].score <= 1.0


@pytest.mark.parametrize("heard", ["TURN THE PAGE", "THE LIGHTS ARE ON", "STOP THE MUSICAL", "TIME FOR TEA"])
def test_distractors_do_not_fire(heard: str) -> None:
    matcher = CommandMatcher([LIGHTS_ON, Command("stop the music please")], threshold=0.85)
    assert matcher.feed_final(0, heard, now=0.0) == []


def test_closer_command_wins_words_claimed_by_two_commands() -> None:
    matcher = CommandMatcher([LIGHTS_ON, LIGHTS_OFF], threshold=0.8)
    assert fired(matcher.feed_final(0, "PLEASE TURN OFF THE LIGHTS", now=0.0)) == ["turn off the lights"]


def test_two_commands_in_one_segment_both_fire() -> None:
    matcher = CommandMatcher([LIGHTS_ON, MUSIC], threshold=0.8)
    assert sorted(fired(matcher.feed_final(0, "STOP THE MUSIC AND TURN ON THE LIGHTS", now=0.0))) == [
        "stop the music",
        "turn on the lights",
    ]


def test_wake_word_must_precede_the_phrase() -> None:
    matcher = CommandMatcher([LIGHTS_ON], threshold=0.8, wake_word="computer", cooldown_s=0.0, wake_window_s=5.0)
    assert matcher.feed_final(0, "TURN ON THE LIGHTS", now=0.0) == []
    assert matcher.feed_final(1, "TURN ON THE LIGHTS COMPUTER", now=20.0) == []  # after, not before
    assert fired(matcher.feed_final(2, "KOMPUTER TURN ON THE LIGHTS", now=40.0)) == ["turn on the lights"]
    # the wake word alone, then the command in the next segment within wake_window_s
    assert matcher.feed_final(3, "COMPUTER", now=60.0) == []
    assert fired(matcher.feed_final(4, "TURN ON THE LIGHTS", now=63.0)) == ["turn on the lights"]
    # ...but not once the window has passed
    assert matcher.feed_final(5, "TURN ON THE LIGHTS", now=90.0) == []
    # the recogniser often glues the wake word to the next word
    assert fired(matcher.feed_final(6, "COMPUTERTERN ON THE LIGHTS", now=100.0)) == ["turn on the lights"]
    assert "computer" in matcher.phrases  # biased for, like the commands


def test_cooldown_per_command() -> None:
    matcher = CommandMatcher([LIGHTS_ON, MUSIC], threshold=0.8, cooldown_s=2.0)
    assert fired(matcher.feed_final(0, "TURN ON THE LIGHTS", now=10.0)) == ["turn on the lights"]
    assert matcher.feed_final(1, "TURN ON THE LIGHTS", now=11.0) == []  # cooling down
    assert fired(matcher.feed_final(2, "STOP THE MUSIC", now=11.5)) == ["stop the music"]  # other command
    assert fired(matcher.feed_final(3, "TURN ON THE LIGHTS", now=12.5)) == ["turn on the lights"]


def test_stable_partial_fires_once_per_segment() -> None:
    matcher = CommandMatcher([LIGHTS_ON], threshold=0.8, cooldown_s=0.0)
    # committed characters end inside "LIGHTS": the last word may still change, no hit yet
    assert matcher.feed_partial(0, "TURN ON THE LIGHTS", stable=15, now=0.0) == []
    # an unstable tail never counts, however good it looks
    assert matcher.feed_partial(0, "TURN ON THE LIGHTS AND", stable=8, now=0.1) == []
    hits = matcher.feed_partial(0, "TURN ON THE LIGHTS AND", stable=19, now=0.2)
    assert fired(hits) == ["turn on the lights"] and hits[0].source == "partial"
    assert matcher.feed_partial(0, "TURN ON THE LIGHTS AND THE", stable=23, now=0.3) == []
    assert matcher.feed_final(0, "TURN ON THE LIGHTS AND THE MUSIC", now=0.4) == []  # same segment
    # the next segment may fire it again (cooldown 0)
    assert fired(matcher.feed_final(1, "TURN ON THE LIGHTS", now=0.5)) == ["turn on the lights"]


def test_server_phrase_matches_count_when_text_does_not() -> None:
    matcher = CommandMatcher([LIGHTS_ON], threshold=0.8)
    assert matcher.feed_final(0, "TIRN UN DA LAITS", now=0.0) == []
    hits = matcher.feed_final(1, "TIRN UN DA LAITS", now=1.0, phrases=[("turn on the lights", 0.9)])
    assert fired(hits) == ["turn on the lights"] and hits[0].source == "server"
    assert matcher.feed_final(2, "X", now=9.0, phrases=[("turn on the lights", 0.3)]) == []  # below threshold


def test_config_loading(tmp_path: Path) -> None:
    good = tmp_path / "commands.toml"
    good.write_text(
        'wake_word = "computer"\nthreshold = 0.7\ncooldown_s = 1.5\n'
        '[[command]]\nphrase = "turn on the lights"\n'
        '[[command]]\nphrase = "stop"\naction = "run"\nrun = ["true"]\n'
        '[[command]]\nphrase = "open"\naction = "post"\nurl = "http://127.0.0.1:9/x"\n'
    )
    config = load_config(good)
    assert config.wake_word == "computer" and config.threshold == 0.7 and config.cooldown_s == 1.5
    assert [c.action for c in config.commands] == ["print", "run", "post"]
    assert config.commands[1].run == ("true",)
    bad = tmp_path / "bad.toml"
    for body, complaint in [
        ('[[command]]\nphrase = "x"\naction = "explode"\n', "action"),
        ('[[command]]\nphrase = "x"\naction = "run"\n', "run"),
        ('[[command]]\nphrase = "x"\naction = "post"\nurl = "ftp://h"\n', "url"),
        ("threshold = 0.5\n", "no \\[\\[command"),
    ]:
        bad.write_text(body)
        with pytest.raises(ConfigError, match=complaint):
            load_config(bad)


# --------------------------------------------------------------------------- actions


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"type": self.headers["Content-Type"], "json": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_actions_print_run_and_post(tmp_path: Path) -> None:
    hook = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    marker = tmp_path / "ran"
    out, err = io.StringIO(), io.StringIO()
    runner = ActionRunner(Console(out, err, live=False), out)
    commands = [
        Command("lights", name="lights-on"),
        Command("music", action="run", run=(sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')")),
        Command("door", action="post", url=f"http://127.0.0.1:{hook.server_port}/hook"),
        Command("broken", action="run", run=(str(tmp_path / "no-such-program"),)),
    ]
    try:
        for i, command in enumerate(commands):
            runner.fire(CommandHit(command, i, 0.9, command.phrase.upper(), "final", 1.0))
        await runner.drain()
    finally:
        hook.shutdown()
    printed = json.loads(out.getvalue())
    assert printed["command"] == "lights-on" and printed["heard"] == "LIGHTS" and printed["segment"] == 0
    assert marker.read_text() == "ok"
    assert _Hook.received == [{"type": "application/json", "json": _Hook.received[0]["json"]}]
    assert _Hook.received[0]["json"]["phrase"] == "door" and _Hook.received[0]["json"]["event"] == "command"
    assert "cannot run" in err.getvalue()  # a failing action is reported, not fatal


# --------------------------------------------------------------------------- end to end

ESPEAK = shutil.which("espeak-ng")


@pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed")
def test_spoken_command_fires_against_real_server(standin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wav = tmp_path / "command.wav"
    speech = "computer, stop the music and then tell me a story about the weather"
    subprocess.run([ESPEAK, "-v", "en-us", "-w", str(wav), speech], check=True)  # 22050 Hz, sent as is
    config = tmp_path / "commands.toml"
    config.write_text(
        'wake_word = "computer"\nthreshold = 0.75\n'
        '[[command]]\nphrase = "stop the music"\nname = "music-off"\n'
        '[[command]]\nphrase = "open the garage door"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "clients.commands", "--commands", str(config), "--url", standin_server.ws_url,
         "--file", str(wav), "--speed", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    # exactly once, although partials and the final of the segment all contain the phrase
    assert [e["command"] for e in events] == ["music-off"], result.stderr
    assert events[0]["event"] == "command" and events[0]["score"] >= 0.75 and events[0]["segment"] == 0
