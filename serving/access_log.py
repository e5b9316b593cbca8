"""The opt-in access log: one JSON `request` line on the service's own log per n-th request
(SENTINEL_ACCESS_LOG: off by default, on, or a share such as 0.01).

Why not uvicorn's access log: it writes a plain-text line per request through its own
logger, measured at a quarter of the service's throughput on the scoring route
(docs/BENCHMARKS.md), and its lines carry the client address and the query string. This
line carries the method, the route (a path the app does not serve is logged as
`unmatched`, so no id typed into a URL reaches the log), the status and the milliseconds.
When off, the middleware is not installed at all.
"""

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.logs import log_event

log = logging.getLogger("sentinel.serving.access")


def route_path(scope: Scope) -> str:
    """The path the app routes on: `path` without the proxy's prefix (`root_path`). Since
    uvicorn 0.26 `path` includes the prefix and Starlette strips it when it routes; anything
    that matches paths before Starlette (the access gate, the hot routes) must do the same,
    as Starlette's `get_route_path` does."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class RouteNames:
    """A request's route as logs and metrics name it: the path of a route the app serves,
    or `unmatched` (so no id typed into a URL becomes a log field or a metric label)."""

    def __init__(self) -> None:
        self._routes: frozenset[str] | None = None

    def __call__(self, scope: Scope) -> str:
        if self._routes is None:
            self._routes = frozenset(route.path for route in scope["app"].routes)
        path = route_path(scope)
        return path if path in self._routes else "unmatched"


class StatusOf:
    """Wraps an ASGI `send`, noting the status the response starts with (`status`: the
    given default until then)."""

    def __init__(self, send: Send, default: int) -> None:
        self.send = send
        self.status = default

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class AccessLog:
    """ASGI middleware logging every `every`-th HTTP request."""

    def __init__(self, app: ASGIApp, every: int) -> None:
        self.app = app
        self.every = every
        self.requests = 0
        self._route = RouteNames()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        if self.requests % self.every:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sending = StatusOf(send, 0)
        try:
            await self.app(scope, receive, sending)
        finally:
            log_event(
                log, logging.INFO, "request", method=scope["method"], route=self._route(scope),
                status=sending.status, ms=round((time.perf_counter() - started) * 1000, 3),
            )  # fmt: skip
