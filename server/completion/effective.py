"""The configuration in force: settings, experiment arm and the arm's parameter digest, as one value.

Resolved from the settings layers (``opportune.server.session``) and swapped whole on every change, so an
event, a request and the status answer all see the same settings, arm and digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opportune.server.config import Settings


@dataclass(frozen=True)
class Effective:
    settings: Settings = field(default_factory=Settings)
    arm: str = ""  # the experiment arm this install is in ("" when no experiment runs)
    arm_digest: str = ""  # digest of the completion and model settings in force (the arm's parameters)

    @property
    def experiment(self) -> str:
        return self.settings.experiment.name
