"""Telemetry events: what happened to every editing opportunity, as plain dataclasses.

The chain of ids joins the funnel: opportunity -> attempt -> response -> shown -> outcome.
No field carries source text or a file path unless the user opted in (``store_text``); documents
are identified by a salted hash.  The store (``opportune.telemetry.store``) writes these rows to SQLite.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Literal

EditKind = Literal["insert", "delete", "replace", "newline", "bulk", "accept", "open"]
TriggerKind = Literal["automatic", "invoked"]
AttemptSource = Literal["model", "cache"]
# Why an attempt ended without a suggestion on screen.
# unsure: the model's confidence in the first tokens was below the arm's ``min_confidence``.
LossReason = Literal["deadline", "cancelled", "superseded", "empty", "error", "skipped", "unsure"]
OutcomeKind = Literal["accepted", "partial", "rejected"]
# ``model_id`` of rows recorded before the model was known (still loading, or a remote server that has not
# named its model yet); per-model reports leave these rows out.
UNKNOWN_MODEL = "unknown"
# A persistence row: the start of tracking (with the checkpoints planned), a measurement, or a checkpoint
# that could not be measured (the document closed, the server stopped, the suggestion was evicted).
PersistenceStatus = Literal["tracking", "measured", "unknown"]


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Common:
    """Fields every row carries: who, where, under which experiment arm."""

    install_id: str
    session_id: str
    experiment: str = ""
    arm: str = ""
    arm_digest: str = ""
    model_id: str = ""  # the GGUF's name or the remote model id; UNKNOWN_MODEL before it is known
    language: str = ""
    client: str = ""


@dataclass(frozen=True)
class Event:
    common: Common
    event_id: str = field(default_factory=new_id, kw_only=True)
    ts: float = field(default_factory=time.time, kw_only=True)
    kind: ClassVar[str] = "event"


@dataclass(frozen=True)
class Edit(Event):
    """A change to a document that is not an opportunity (bulk: paste, format, multi-line undo)."""

    kind: ClassVar[str] = "edit"
    document_hash: str
    edit_kind: EditKind
    chars_inserted: int
    chars_deleted: int


@dataclass(frozen=True)
class Opportunity(Event):
    """A human edit at the cursor, counted before any arm-dependent rule."""

    kind: ClassVar[str] = "opportunity"
    opportunity_id: str
    document_hash: str
    edit_kind: EditKind
    trigger_kind: TriggerKind = "automatic"


@dataclass(frozen=True)
class Skip(Event):
    """A trigger rule decided not to attempt; kept to explain the attempt rate."""

    kind: ClassVar[str] = "skip"
    opportunity_id: str
    rule: str


@dataclass(frozen=True)
class Attempt(Event):
    kind: ClassVar[str] = "attempt"
    attempt_id: str
    opportunity_id: str
    source: AttemptSource
    prompt_tokens: int = 0
    reused_tokens: int = 0
    # The context sources the prompt used and their tokens, "name:tokens" comma-separated, in prompt order
    # (project, path, syntax, window, suffix); empty for an answer from the typeahead cache.
    context_parts: str = ""
    prompt_text: str | None = None  # only with store_text


@dataclass(frozen=True)
class Response(Event):
    kind: ClassVar[str] = "response"
    attempt_id: str
    latency_first_ms: float | None
    latency_total_ms: float
    generated_tokens: int
    stop_reason: str
    chars: int
    lines: int
    loss_reason: LossReason | None = None  # None: a suggestion was returned
    stages_ms: str = ""  # JSON object stage -> milliseconds
    completion_id: str | None = None
    completion_tokens: int = 0  # tokens of the returned text, by the model's tokenizer
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens found in the KV cache, not evaluated again
    completion_text: str | None = None  # only with store_text
    prompt_text: str | None = None  # only with store_text


@dataclass(frozen=True)
class Shown(Event):
    kind: ClassVar[str] = "shown"
    completion_id: str
    attempt_id: str
    inferred: bool = False


@dataclass(frozen=True)
class Outcome(Event):
    kind: ClassVar[str] = "outcome"
    completion_id: str
    outcome: OutcomeKind
    accepted_chars: int = 0
    accepted_tokens: int = 0
    reason: str = ""
    inferred: bool = False
    # Characters the user did not type minus the keys spent accepting (one per accept or partial accept);
    # characters the user typed through themselves save nothing.
    keystrokes_saved: int = 0


CLIENT_REJECT_REASONS = frozenset({"dismissed", "typed_over", "superseded", "other"})
"""Rejection reasons a client may report, stored as sent; anything else is stored as "other" unless the user
opted in to storing text (a free-form reason could carry anything: a path, a line of code)."""


def client_reject_reason(reason: object, store_text: bool) -> str:
    """The reason to store for a client's ``didRejectCompletion``."""
    if not isinstance(reason, str) or not reason:
        return "dismissed"
    if reason in CLIENT_REJECT_REASONS or store_text:
        return reason
    return "other"


@dataclass(frozen=True)
class Persistence(Event):
    """What stayed of an accepted suggestion, measured at checkpoints after the accept.

    One ``tracking`` row when tracking starts (``checkpoints``: the planned checkpoints in seconds, comma
    separated), then one row per checkpoint: ``measured`` (``fraction`` of the accepted characters still
    there around where they were inserted, ``kept_chars``) or ``unknown`` (``reason``: closed, shutdown,
    evicted).  A checkpoint with no row after its time has passed (the server was killed) is unknown too:
    the analysis (``opportune.telemetry.persistence``) derives it from the tracking row.  No source text
    unless ``store_text``.
    """

    kind: ClassVar[str] = "persistence"
    completion_id: str
    status: PersistenceStatus
    checkpoint_s: float = 0.0
    checkpoints: str = ""
    accepted_chars: int = 0
    kept_chars: int = 0
    fraction: float | None = None
    reason: str = ""
    kept_text: str | None = None  # only with store_text: the text there at this checkpoint
    prefix_text: str | None = None  # only with store_text, on the tracking row: the code before it
    suffix_text: str | None = None  # only with store_text, on the tracking row: the code after it


# ---- next edits: the same funnel for the edits that follow from the one just made -----------------------

NextEditSource = Literal["rule", "model"]
NextEditOutcomeKind = Literal["accepted", "rejected"]


@dataclass(frozen=True)
class EditOpportunity(Event):
    """An edit with follow-ups (a signature changed, a declaration renamed), counted once per change and
    before any arm-dependent rule: the denominator of edit CPO."""

    kind: ClassVar[str] = "edit_opportunity"
    edit_opportunity_id: str
    document_hash: str
    change_kind: str  # rename, rename_function, rename_parameter, add_parameter, remove_parameter, ...
    follow_ups: int  # places found that need the follow-up edit
    files: int  # files they are in


@dataclass(frozen=True)
class NextEdit(Event):
    """One follow-up edit offered to the client (its first offer: asking again does not count twice)."""

    kind: ClassVar[str] = "next_edit"
    next_edit_id: str
    edit_opportunity_id: str
    source: NextEditSource
    edit_kind: str  # rename, callee, arguments, parameter_use
    chars_changed: int  # what accepting it changes: max(characters removed, characters inserted)
    latency_ms: float  # from the request to the answer that first held it
    same_file: bool
    snippet: bool = False


@dataclass(frozen=True)
class NextEditOutcome(Event):
    kind: ClassVar[str] = "next_edit_outcome"
    next_edit_id: str
    outcome: NextEditOutcomeKind
    chars_changed: int = 0  # of an accepted edit
    reason: str = ""
    inferred: bool = False


EVENT_TYPES: tuple[type[Event], ...] = (
    Edit,
    Opportunity,
    Skip,
    Attempt,
    Response,
    Shown,
    Outcome,
    Persistence,
    EditOpportunity,
    NextEdit,
    NextEditOutcome,
)
