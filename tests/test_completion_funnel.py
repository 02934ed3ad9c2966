"""The funnel recorder on its own: every row carries the configuration in force when it is made, a request
trace becomes one response row, and a failing sink never reaches the caller."""

from __future__ import annotations

import json

from opportune.server.backends.base import Generation
from opportune.server.completion.effective import Effective
from opportune.server.completion.funnel import FunnelRecorder, RequestTrace
from opportune.server.completion.tracker import Suggestion
from opportune.server.completion.worker import Live
from opportune.server.config import Settings
from opportune.server.documents import Position
from opportune.server.postprocess import Shape
from opportune.server.prompt import Prompt
from opportune.telemetry import events as ev

SHAPE = Shape(False, 1, "x = ", "")


def recorder(config: list[Effective], model: list[str]) -> tuple[FunnelRecorder, list[ev.Event]]:
    events: list[ev.Event] = []
    funnel = FunnelRecorder(events.append, lambda: config[0], lambda: model[0], len, "install", "session")
    return funnel, events


def test_every_row_carries_the_configuration_in_force_when_it_is_made() -> None:
    config = [Effective(Settings(client_name="vim"), "a", "d1")]
    funnel, events = recorder(config, ["gemma"])
    funnel.edit("python", "h", "open", 3, 0)
    config[0] = Effective(Settings(client_name="vim"), "b", "d2")
    funnel.skip(None, "opp", "mid_word")
    first, second = (e.common for e in events)
    assert (first.arm, first.arm_digest, first.model_id, first.client) == ("a", "d1", "gemma", "vim")
    assert (second.arm, second.arm_digest, second.language) == ("b", "d2", "plaintext")
    assert first.install_id == "install" and first.session_id == "session"


def test_a_model_answer_becomes_one_response_row_with_its_stages() -> None:
    funnel, events = recorder([Effective()], ["gemma"])
    trace = RequestTrace("file:///a.py", "python", 3)
    funnel.attempt(trace, "opp-1", "model")
    live = Live.at_cursor("file:///a.py", "x = ", 4, SHAPE)
    live.prompt = Prompt.plain("x = ", 3)
    live.context_ms = 2.0
    live.tokens = 2
    live.result = Generation("42\n", 2, "stop", 3, 1, prefill_ms=20.0, first_token_ms=25.0, total_ms=40.0)
    trace.live = live
    trace.stage("trigger", trace.started)
    suggestion = Suggestion("c-1", "42", 4, Position(0, 4), 41.0, "model")
    funnel.response(trace, suggestion)
    attempt, response = events
    assert isinstance(attempt, ev.Attempt) and attempt.source == "model"
    assert isinstance(response, ev.Response) and response.attempt_id == attempt.attempt_id
    assert response.stop_reason == "stop" and response.latency_first_ms == 25.0
    assert (response.chars, response.lines, response.completion_id, response.prompt_tokens) == (
        2,
        1,
        "c-1",
        3,
    )
    stages = json.loads(response.stages_ms)
    assert stages["prefill"] == 20.0 and stages["decode"] == 20.0 and stages["context"] == 2.0
    assert "trigger" in stages and response.loss_reason is None


def test_a_loss_is_a_response_with_its_reason_and_nothing_shown() -> None:
    funnel, events = recorder([Effective()], ["gemma"])
    trace = RequestTrace("file:///a.py", "python", 3)
    funnel.attempt(trace, "opp-1", "model")
    funnel.response(trace, None, "deadline")
    response = events[-1]
    assert isinstance(response, ev.Response)
    assert response.loss_reason == "deadline" and response.chars == 0 and response.completion_id is None


def test_a_failing_sink_never_reaches_the_caller() -> None:
    def broken(_e: ev.Event) -> None:
        raise OSError("disk full")

    funnel = FunnelRecorder(broken, Effective, lambda: "", len, "i", "s")
    funnel.opportunity("python", "opp", "h", "insert")  # no exception
