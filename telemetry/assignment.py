"""Experiment assignment: which arm an install is in, and the digest of an arm's settings.

Each arm gets a stable hash of ``experiment:install_id:arm`` (sha256) in (0, 1), turned into an
exponential race: score = -ln(u) / weight, and the lowest score wins (weighted rendezvous hashing).  An
arm wins with probability weight / sum of weights, the same install always lands in the same arm, in any
process, and changing one arm's weight moves installs only into or out of that arm -- exactly the share
that changed -- never between two arms whose weights stayed.  Adding an arm takes installs only into it;
removing one moves only its own installs.  (Laying arms out on [0, 1) by cumulative weight does not have
this property beyond two arms: changing the first arm's weight shifts every later boundary and reshuffles
installs between unrelated arms.)

The language server needs this at start, so the module uses the standard library only: the analysis
(``opportune.telemetry.experiments``, with pandas and scipy) loads when a report is made, never here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def stable_unit(text: str) -> float:
    """A number in (0, 1) from sha256 of ``text``: the same in every process and on every machine."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    # 53 bits fill a double exactly; +0.5 keeps the value strictly inside (0, 1) so its log is finite.
    return ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) / float(1 << 53)


def validate_arms(arms: Sequence[tuple[str, float]]) -> None:
    """Raise ValueError unless ``arms`` are uniquely named with finite weights >= 0, one of them > 0."""
    if not arms:
        raise ValueError("an experiment needs at least one arm")
    names = [name for name, _ in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate arm names in {names}")
    for name, weight in arms:
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"arm {name!r}: weight must be a finite number >= 0, not {weight}")
    if not any(weight > 0 for _, weight in arms):
        raise ValueError("at least one arm needs a positive weight")


def assign_arm(experiment: str, install_id: str, arms: Sequence[tuple[str, float]]) -> str:
    """The arm of ``install_id`` in ``experiment``: stable, with probability proportional to weight.

    ``arms`` are (name, weight) pairs; weights need not sum to 1; an arm of weight 0 gets no one.
    """
    validate_arms(arms)
    best_name = ""
    best_score = math.inf
    for name, weight in arms:
        if weight <= 0:
            continue
        # An Exp(weight) variable from a uniform one: the minimum of such draws falls on arm i with
        # probability w_i / sum(w).  Only this arm's score depends on its weight, hence the stability.
        score = -math.log(stable_unit(f"{experiment}:{install_id}:{name}")) / weight
        if score < best_score:
            best_name, best_score = name, score
    return best_name


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short digest (12 hex characters of sha256) of settings, as canonical JSON (sorted keys)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
