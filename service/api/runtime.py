"""What the routes need at run time, built once per process by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.db.accepts import GroupCommitter
from service.db.engine import Database
from service.domain.envelope import Limits
from service.domain.retry import RetryPolicy
from service.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    committer: GroupCommitter
    policy: RetryPolicy
    limits: Limits
    key_touched: dict[str, float] = field(default_factory=dict)
