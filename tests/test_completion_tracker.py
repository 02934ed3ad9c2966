"""The suggestion tracker on its own: outcomes inferred from the edits after a suggestion, the client's own
reports winning over inference, and the rest of a partly accepted suggestion offered under the same id."""

from __future__ import annotations

from opportune.server.completion.effective import Effective
from opportune.server.completion.funnel import FunnelRecorder
from opportune.server.completion.tracker import MAX_ANSWERS, Suggestion, SuggestionTracker
from opportune.server.completion.workspace import DocState, Workspace
from opportune.server.documents import Position
from opportune.telemetry import events as ev

URI = "file:///p/calc.py"


def setup(text: str = "r = ") -> tuple[Workspace, SuggestionTracker, DocState, list[ev.Event]]:
    events: list[ev.Event] = []
    funnel = FunnelRecorder(events.append, Effective, lambda: "m", lambda t: len(t.split()), "i", "s")
    ws = Workspace()
    tracker = SuggestionTracker(funnel, ws.get)
    state = ws.open(URI, text, "python", 1)
    return ws, tracker, state, events


def offer(tracker: SuggestionTracker, state: DocState, text: str) -> Suggestion:
    cursor = len(state.doc.text)
    s = Suggestion(ev.new_id(), text, cursor, state.doc.position_at(cursor), 10.0, "model")
    tracker.offer(state, s, "attempt-1")
    return s


def type_at_end(ws: Workspace, tracker: SuggestionTracker, state: DocState, chars: str) -> ev.EditKind:
    end = state.doc.position_at(len(state.doc.text))
    edits = ws.apply(state, state.doc.version + 1, [(end, end, chars)])
    return tracker.classify(state, edits)


def outcomes(events: list[ev.Event]) -> list[ev.Outcome]:
    return [e for e in events if isinstance(e, ev.Outcome)]


def test_typing_a_suggestion_through_accepts_it_and_each_key_stays_an_opportunity() -> None:
    ws, tracker, state, events = setup()
    offer(tracker, state, "radius")
    kinds = [type_at_end(ws, tracker, state, ch) for ch in "radius"]
    assert kinds == ["insert"] * 6
    (outcome,) = outcomes(events)
    assert (outcome.outcome, outcome.accepted_chars, outcome.reason, outcome.inferred) == (
        "accepted",
        6,
        "typed_through",
        True,
    )
    assert state.active is None


def test_an_accept_in_one_edit_is_an_accept_not_an_opportunity() -> None:
    ws, tracker, state, events = setup()
    offer(tracker, state, "radius")
    assert type_at_end(ws, tracker, state, "radius") == "accept"
    assert outcomes(events)[-1].outcome == "accepted"


def test_typing_over_a_suggestion_rejects_it_and_after_a_word_it_is_partial() -> None:
    ws, tracker, state, events = setup()
    offer(tracker, state, "radius")
    assert type_at_end(ws, tracker, state, "q") == "insert"
    assert outcomes(events)[-1].outcome == "rejected" and outcomes(events)[-1].reason == "typed_over"
    offer(tracker, state, "math.pi")
    type_at_end(ws, tracker, state, "math.")
    type_at_end(ws, tracker, state, "e")
    assert (outcomes(events)[-1].outcome, outcomes(events)[-1].accepted_chars) == ("partial", 5)


def test_the_rest_after_a_partial_accept_is_offered_under_the_same_id() -> None:
    ws, tracker, state, _ = setup()
    s = offer(tracker, state, "math.pi * r")
    type_at_end(ws, tracker, state, "math.")
    rest = tracker.continuation(state, len(state.doc.text))
    assert rest is not None and rest.text == "pi * r" and rest.completion_id == s.completion_id
    assert rest.source == "cache"
    # The client shows "pi * r" and reports a partial accept of 2 characters of what it showed.
    tracker.did_accept(s.completion_id, 2)
    assert outcomes(_)[-1].accepted_chars == len("math.pi")


def test_the_clients_report_wins_over_inference_and_a_reject_after_an_accept_is_ignored() -> None:
    ws, tracker, state, events = setup()
    s = offer(tracker, state, "radius")
    tracker.did_show(s.completion_id)
    tracker.did_accept(s.completion_id)
    tracker.did_reject(s.completion_id, "dismissed")
    type_at_end(ws, tracker, state, "q")  # would infer a rejection
    assert [(o.outcome, o.inferred) for o in outcomes(events)] == [("accepted", False)]
    shown = [e for e in events if isinstance(e, ev.Shown)]
    assert [(x.completion_id, x.inferred) for x in shown] == [(s.completion_id, False)]
    assert tracker.client_reports_shown


def test_a_client_that_reports_nothing_is_taken_to_have_shown_every_answer() -> None:
    _, tracker, state, events = setup()
    s = offer(tracker, state, "radius")
    tracker.assume_shown(state, s, "attempt-1")
    tracker.did_show(s.completion_id)
    later = offer(tracker, state, "other")
    tracker.assume_shown(state, later, "attempt-2")  # the client reports now: nothing is assumed
    assert [(x.completion_id, x.inferred) for x in events if isinstance(x, ev.Shown)] == [
        (s.completion_id, True),
        (s.completion_id, False),
    ]


def test_reports_on_forgotten_suggestions_are_ignored_and_memory_is_bounded() -> None:
    _, tracker, state, events = setup()
    first = offer(tracker, state, "a")
    for _ in range(MAX_ANSWERS + 1):
        offer(tracker, state, "b")
    before = len(outcomes(events))
    tracker.did_accept(first.completion_id)
    tracker.did_reject("no-such-id", "dismissed")
    assert len(outcomes(events)) == before
    assert len(tracker._answers) == MAX_ANSWERS


def test_a_multi_change_edit_is_bulk_and_ends_the_suggestion() -> None:
    ws, tracker, state, events = setup("a\nb\n")
    offer(tracker, state, "x")
    p = Position(0, 0)
    edits = ws.apply(state, 2, [(p, p, "1"), (Position(1, 0), Position(1, 0), "2")])
    assert tracker.classify(state, edits) == "bulk"
    assert outcomes(events)[-1].reason == "edited" and state.active is None
