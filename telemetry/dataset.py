"""A dataset from real use (opt-in): what the model saw, what it suggested, what became of it, what stayed.

    opportune export --format dataset --db PATH --out data.jsonl

One JSON object per line, per suggestion returned to the editor (``response`` rows with a completion id):

    completion_id   string
    ts              double   when it was answered (Unix seconds)
    language, model_id, experiment, arm   strings, as on every event
    prompt          string   the prompt the model was given (project context included), as rendered
    prefix          string|null  the code before the suggestion when it was accepted (up to 2,000 chars)
    suffix          string|null  the code after it then (up to 500 chars)
    suggestion      string   what the model suggested
    outcome         string|null  accepted | partial | rejected (null: never resolved)
    accepted_chars  int
    keystrokes_saved int
    checkpoint_s    double|null  the last checkpoint measured (see opportune.telemetry.persistence)
    persistence     double|null  the fraction of the accepted text still there then
    kept_text       string|null  the text that was there then: the answer a model should have given

Text exists only in a store written with ``telemetry.store_text = true`` (off by default): without it this
export refuses, and says why.  Every text field goes through ``opportune.telemetry.redact`` (patterns and
detect-secrets) before anything is written.  ``opportune eval --tasks-from`` reads these files back as
evaluation tasks (the kept text is the expected answer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

import pandas as pd

from opportune.telemetry.cpo import resolved_outcomes
from opportune.telemetry.frames import EventFrames, json_safe
from opportune.telemetry.persistence import last_measured
from opportune.telemetry.redact import redact

NO_TEXT = (
    "the dataset needs the text of prompts and suggestions, and this store has none: text is stored only "
    "with telemetry.store_text = true (off by default, so that no source code leaves the editor "
    "unasked); set it in opportune.toml ([telemetry] store_text = true) or in the editor's settings, "
    "use Opportune for a while, then export again. Nothing was written."
)
TEXT_FIELDS = ("prompt", "prefix", "suffix", "suggestion", "kept_text")


class DatasetUnavailable(ValueError):
    """The store cannot give a dataset (no text was stored); the message says why, for people."""


def _by_completion(df: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, Any]]:
    if df.empty:
        return {}
    return {str(r["completion_id"]): r for r in df[["completion_id", *columns]].to_dict("records")}


def dataset_records(frames: EventFrames) -> Iterator[dict[str, Any]]:
    """The records of the dataset, redacted, oldest first.  Raises ``DatasetUnavailable`` without text."""
    responses = frames.responses
    answered = responses[responses["completion_id"].notna()]
    if answered.empty or answered["completion_text"].isna().all():
        raise DatasetUnavailable(NO_TEXT)
    answered = answered[answered["completion_text"].notna()].sort_values("ts", kind="stable")
    outcomes = _by_completion(resolved_outcomes(frames), ["outcome", "accepted_chars", "keystrokes_saved"])
    persistence = frames["persistence"]
    tracking = _by_completion(
        persistence[persistence["status"] == "tracking"].drop_duplicates("completion_id", keep="last"),
        ["prefix_text", "suffix_text"],
    )
    kept = _by_completion(last_measured(frames), ["checkpoint_s", "fraction", "kept_text"])
    for r in answered.to_dict("records"):
        cid = str(r["completion_id"])
        outcome, track, last = outcomes.get(cid, {}), tracking.get(cid, {}), kept.get(cid, {})
        record = {
            "completion_id": cid,
            "ts": r["ts"],
            "language": r["language"],
            "model_id": r["model_id"],
            "experiment": r["experiment"],
            "arm": r["arm"],
            "prompt": r["prompt_text"],
            "prefix": track.get("prefix_text"),
            "suffix": track.get("suffix_text"),
            "suggestion": r["completion_text"],
            "outcome": outcome.get("outcome"),
            "accepted_chars": int(outcome.get("accepted_chars", 0) or 0),
            "keystrokes_saved": int(outcome.get("keystrokes_saved", 0) or 0),
            "checkpoint_s": last.get("checkpoint_s"),
            "persistence": last.get("fraction"),
            "kept_text": last.get("kept_text"),
        }
        for name in TEXT_FIELDS:
            value = record[name]
            record[name] = redact(value) if isinstance(value, str) else None
        yield json_safe(record)


def write_dataset(records: list[dict[str, Any]], out: IO[str]) -> int:
    """Write dataset records as JSONL; returns their number."""
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    return len(records)


def read_dataset(path: str) -> list[dict[str, Any]]:
    """The records of a dataset file (for ``opportune eval --tasks-from``)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
