"""The completion engine in parts.

- ``workspace``: open documents, their syntax trees and per-document state; what a prompt may see.
- ``tracker``: the suggestion on screen and what became of it (from edits or the client's reports).
- ``worker``: the model thread: backend lifecycle, generation from a frozen job, pre-warm, typeahead cache.
- ``funnel``: telemetry events from a request trace and the engine's other observations.
- ``effective``: the configuration in force (settings, arm, digest) as one immutable value.
- ``engine``: the coordinator that the LSP layer, the CLI, the demo and the eval harness drive.
"""

from opportune.server.completion.effective import Effective
from opportune.server.completion.engine import Engine
from opportune.server.completion.tracker import Suggestion

__all__ = ["Effective", "Engine", "Suggestion"]
