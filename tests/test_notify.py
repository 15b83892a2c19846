"""The notifier: a real local webhook and a real shell command; failures are results, never raised."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from runner.config import NotifyConfig
from runner.notify import Event, notify

EVENT = Event("alert", "credit_score", "20260131T000000-abcdef", as_of="2026-01-31", step="monitor",
              summary="2 features drifted", reasons=("income: PSI 0.31", "new level 'crypto' in 3.1% of rows"))


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(500 if self.path == "/broken" else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()


def test_webhook_receives_the_event_as_json(webhook):
    url, received = webhook
    [delivery] = notify(NotifyConfig(webhook=url + "/hook"), EVENT)
    assert delivery.ok and delivery.detail == "HTTP 204"
    assert received[0]["kind"] == "alert" and received[0]["run_id"] == EVENT.run_id
    assert received[0]["reasons"] == list(EVENT.reasons)


def test_command_gets_the_event_on_stdin_and_in_its_environment(tmp_path):
    out = tmp_path / "event.json"
    command = f'cat > {out} && test "$RUNNER_EVENT" = alert'
    [delivery] = notify(NotifyConfig(command=command), EVENT)
    assert delivery.ok, delivery.detail
    assert json.loads(out.read_text())["summary"] == "2 features drifted"


def test_failures_are_reported_not_raised(webhook, tmp_path):
    url, _ = webhook
    config = NotifyConfig(webhook=url + "/broken", command="echo no route to pager >&2; exit 3")
    deliveries = notify(config, EVENT)
    assert [(d.channel, d.ok) for d in deliveries] == [("webhook", False), ("command", False)]
    assert deliveries[0].detail.startswith("HTTP 500")
    assert deliveries[1].detail == "exit 3: no route to pager"
    [dead] = notify(NotifyConfig(webhook="http://127.0.0.1:9/nothing-listens", timeout=2), EVENT)
    assert not dead.ok and dead.detail.startswith("not reachable")
    [slow] = notify(NotifyConfig(command="sleep 5", timeout=0.3), EVENT)
    assert not slow.ok and "did not finish" in slow.detail


def test_only_the_events_listed_are_sent(tmp_path):
    out = tmp_path / "sent"
    config = NotifyConfig(command=f"touch {out}", events=("failure",))
    assert notify(config, EVENT) == [] and not out.exists()
    assert notify(NotifyConfig(), EVENT) == []  # nothing configured, nothing sent
