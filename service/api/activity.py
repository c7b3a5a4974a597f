"""How busy the API is: requests in progress, and since when none has been."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send


class ApiActivity:
    def __init__(self) -> None:
        self.in_progress = 0
        self.quiet_since = time.monotonic()

    def started(self) -> None:
        self.in_progress += 1

    def ended(self) -> None:
        self.in_progress -= 1
        self.quiet_since = time.monotonic()

    def idle_for(self, seconds: float) -> bool:
        """No request in progress, and none ended within ``seconds``."""
        return self.in_progress == 0 and time.monotonic() - self.quiet_since >= seconds


class TrackActivity:
    """ASGI middleware counting the HTTP requests of one process into ``activity``."""

    def __init__(self, app: ASGIApp, activity: ApiActivity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.activity.started()
        try:
            await self.app(scope, receive, send)
        finally:
            self.activity.ended()
