"""A real Redis connection that can lose one reply: the command runs on the server, the
client hears nothing. That is the "unknown outcome" a retry layer must survive; a hook
lets another client act in the gap, as another service would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis import exceptions as redis_errors
from redis.asyncio import Connection


class ReplyLosingConnection(Connection):
    """Arm it with `lose_next_reply(hook)`: the next reply is read, `hook` runs, then the
    caller gets a timeout as if the reply never arrived."""

    _armed: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def lose_next_reply(cls, hook: Callable[[], Awaitable[None]]) -> None:
        cls._armed = hook

    async def read_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        reply = await super().read_response(*args, **kwargs)
        hook, ReplyLosingConnection._armed = ReplyLosingConnection._armed, None
        if hook is None:
            return reply
        await hook()
        await self.disconnect()
        raise redis_errors.TimeoutError("reply lost (injected)")
