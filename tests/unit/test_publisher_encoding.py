"""What the engine's messages tell executors: ``fresh`` only on first attempts it vouches for."""

from __future__ import annotations

import json

from hyperpool.executor.publisher import Publisher, without_fresh
from hyperpool.models import TaskMessage
from hyperpool.settings import Settings


def _kwargs(fresh: bool, attempt: int) -> dict:
    publisher = Publisher(Settings())
    message = TaskMessage(taskId="t1", name="mAdd", executable="mAdd", args=["a.fits"])
    _queue, encoded = publisher._encode("ns.mAdd", message, attempt, "stream", "run-1", fresh)
    args, kwargs, _embed = json.loads(encoded.body)
    assert args[0]["taskId"] == "t1"
    assert encoded.properties["application_headers"]["id"] == f"t1#{attempt}"
    return kwargs


def test_fresh_is_set_only_when_vouched_for():
    assert _kwargs(fresh=True, attempt=1)["fresh"] is True
    assert "fresh" not in _kwargs(fresh=False, attempt=1)


def test_run_kwargs_carry_stream_attempt_and_run():
    kwargs = _kwargs(fresh=False, attempt=2)
    assert kwargs == {"reply_to": "stream", "attempt": 2, "run_id": "run-1"}


def test_a_republished_message_is_no_longer_fresh():
    publisher = Publisher(Settings())
    message = TaskMessage(taskId="t1", name="mAdd", executable="mAdd", args=[])
    _queue, encoded = publisher._encode("ns.mAdd", message, 1, "stream", "run-1", True)
    again = without_fresh(encoded)
    args, kwargs, _embed = json.loads(again.body)
    assert "fresh" not in kwargs and args[0]["taskId"] == "t1"
    assert kwargs == {"reply_to": "stream", "attempt": 1, "run_id": "run-1"}


def test_headers_that_say_not_set_are_left_out():
    publisher = Publisher(Settings())
    message = TaskMessage(taskId="t1", name="mAdd", executable="mAdd", args=[])
    _queue, encoded = publisher._encode("ns.mAdd", message, 1, "stream", "run-1", True)
    headers = encoded.properties["application_headers"]
    assert headers["task"] == "hyperpool.run" and headers["id"] == "t1#1"
    assert headers["argsrepr"] == "[mAdd: mAdd]" and headers["ignore_result"] is True
    assert not {"eta", "expires", "timelimit", "shadow", "stamps", "parent_id"} & set(headers)
