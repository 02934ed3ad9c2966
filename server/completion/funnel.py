"""The funnel recorder: telemetry events from what the engine did, with the fields every row carries.

A completion request is followed by one ``RequestTrace`` (its ids, its stage timings, the generation that
served it); the recorder turns it, and the engine's other observations (edits, opportunities, skips,
outcomes), into ``opportune.telemetry.events`` rows.  Recording never raises into the caller.

Labels say what happened.  ``model_id`` is the model that answered (the GGUF's name, the remote model id),
``events.UNKNOWN_MODEL`` before the model is known.  An answer comes from the model (``source = 'model'``:
a generation started for the request, or one still running that the request joined) or from the typeahead
cache (``'cache'``: the text of a finished generation, no model work).  ``stop_reason`` is the finished
generation's own (stop, eos, length), ``progressive`` for an answer taken while the generation went on,
``cache``, ``error``, ``cancelled``, ``running`` (no answer, the generation went on), or ``none`` (no
generation).  A model answer carries its generation's first-token latency and context, prefill and decode
stages; while the generation still runs, prefill is measured up to its first token.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opportune.server.completion.effective import Effective
from opportune.server.completion.tracker import Suggestion
from opportune.server.completion.worker import Live
from opportune.telemetry import events as ev

log = logging.getLogger(__name__)

Recorder = Callable[[ev.Event], None]


@dataclass
class RequestTrace:
    """One completion request, from arrival to answer: what the response event is made of."""

    uri: str
    language: str | None
    version: int  # the document's version when the request arrived
    started: float = field(default_factory=time.perf_counter)
    attempt_id: str | None = None  # set once the server sets out to answer
    opportunity_id: str = ""
    source: ev.AttemptSource = "model"
    live: Live | None = None  # the generation the answer comes from
    stages: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds

    def stage(self, name: str, since: float) -> None:
        self.stages[name] = (time.perf_counter() - since) * 1000

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class FunnelRecorder:
    def __init__(
        self,
        record: Recorder | None,
        config: Callable[[], Effective],
        model_id: Callable[[], str],
        count_tokens: Callable[[str], int],
        install_id: str,
        session_id: str,
    ) -> None:
        self.record: Recorder = record or (lambda _e: None)
        self._config = config
        self._model_id = model_id
        self._count_tokens = count_tokens
        self.install_id = install_id
        self.session_id = session_id

    def common(self, language: str | None) -> ev.Common:
        config = self._config()
        return ev.Common(
            install_id=self.install_id,
            session_id=self.session_id,
            experiment=config.experiment,
            arm=config.arm,
            arm_digest=config.arm_digest,
            model_id=self._model_id() or ev.UNKNOWN_MODEL,
            language=language or "plaintext",
            client=config.settings.client_name,
        )

    def emit(self, event: ev.Event) -> None:
        try:
            self.record(event)
        except Exception:  # telemetry never breaks completions
            log.exception("recording %s failed", event.kind)

    # ---- the editor's side --------------------------------------------------------------------------

    def edit(
        self, language: str | None, document_hash: str, kind: ev.EditKind, inserted: int, removed: int
    ) -> None:
        self.emit(ev.Edit(self.common(language), document_hash, kind, inserted, removed))

    def opportunity(
        self,
        language: str | None,
        opportunity_id: str,
        document_hash: str,
        kind: ev.EditKind,
        trigger: ev.TriggerKind = "automatic",
    ) -> None:
        self.emit(ev.Opportunity(self.common(language), opportunity_id, document_hash, kind, trigger))

    def skip(self, language: str | None, opportunity_id: str, rule: str) -> None:
        self.emit(ev.Skip(self.common(language), opportunity_id, rule))

    def shown(self, language: str | None, completion_id: str, attempt_id: str, *, inferred: bool) -> None:
        self.emit(ev.Shown(self.common(language), completion_id, attempt_id, inferred=inferred))

    def client_reason(self, reason: str) -> str:
        """A rejection reason as sent by the client, to be stored: from a fixed vocabulary unless the user
        opted in to storing text (a free-form reason could carry a path or a line of code)."""
        return ev.client_reject_reason(reason, self._config().settings.telemetry.store_text)

    def outcome(
        self,
        language: str | None,
        completion_id: str,
        outcome: ev.OutcomeKind,
        accepted: str,
        reason: str,
        *,
        inferred: bool,
        keystrokes_saved: int = 0,
    ) -> None:
        self.emit(
            ev.Outcome(
                self.common(language),
                completion_id,
                outcome,
                accepted_chars=len(accepted),
                accepted_tokens=self._count_tokens(accepted) if accepted else 0,
                reason=reason,
                inferred=inferred,
                keystrokes_saved=keystrokes_saved,
            )
        )

    # ---- a request ----------------------------------------------------------------------------------

    def attempt(self, trace: RequestTrace, opportunity_id: str, source: ev.AttemptSource) -> None:
        """The server sets out to answer.  The attempt row is written with the response, once the prompt
        it sent is known (its tokens per context source; a cancelled request's are zero if it never got
        that far)."""
        trace.attempt_id = ev.new_id()
        trace.opportunity_id = opportunity_id
        trace.source = source

    def response(
        self, trace: RequestTrace, suggestion: Suggestion | None, loss: ev.LossReason | None = None
    ) -> None:
        assert trace.attempt_id is not None
        live = trace.live if trace.source == "model" else None  # a cache answer did no model work
        stages = trace.stages
        common = self.common(trace.language)
        first_token_ms = live.first_token_ms() if live else None
        if live is not None:
            if live.model_id:
                common = dataclasses.replace(common, model_id=live.model_id)
            if live.prompt is not None:
                stages.setdefault("context", live.context_ms)
            if live.result is not None:
                stages.setdefault("prefill", live.result.prefill_ms)
                if first_token_ms is not None:
                    stages.setdefault("decode", live.result.total_ms - live.result.prefill_ms)
            elif first_token_ms is not None and live.first_token_at is not None:
                stages.setdefault("prefill", first_token_ms)
                stages.setdefault("decode", (time.perf_counter() - live.first_token_at) * 1000)
        text = suggestion.text if suggestion else ""
        prompt = live.prompt if live else None
        reused = live.result.reused_tokens if live and live.result else 0
        self.emit(
            ev.Attempt(
                common,
                trace.attempt_id,
                trace.opportunity_id,
                trace.source,
                prompt_tokens=prompt.tokens if prompt else 0,
                reused_tokens=reused,
                context_parts=",".join(f"{k}:{n}" for k, n in prompt.tokens_by_part().items())
                if prompt
                else "",
            )
        )
        self.emit(
            ev.Response(
                common,
                trace.attempt_id,
                latency_first_ms=first_token_ms,
                latency_total_ms=trace.elapsed_ms(),
                generated_tokens=live.tokens if live else 0,
                stop_reason=stop_reason(trace, answered=suggestion is not None),
                chars=len(text),
                lines=text.count("\n") + 1 if text else 0,
                loss_reason=loss,
                stages_ms=json.dumps({k: round(v, 2) for k, v in stages.items()}),
                completion_id=suggestion.completion_id if suggestion else None,
                completion_tokens=self._count_tokens(text) if text else 0,
                completion_text=text or None,
                prompt_text=prompt.prefix if prompt else None,
                prompt_tokens=prompt.tokens if prompt else 0,
                reused_tokens=reused,
            )
        )


def stop_reason(trace: RequestTrace, *, answered: bool) -> str:
    """Why the text of a response ends where it does (see the module docstring)."""
    live = trace.live
    if live is None:
        return "none"
    if trace.source == "cache":
        return "cache"
    if live.error:
        return "error"
    if live.result is not None:
        return live.result.stop_reason
    if live.cancel.is_set():
        return "cancelled"
    return "progressive" if answered else "running"
