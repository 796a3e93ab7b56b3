"""Where OAuth tokens wait between calls: in this process, or in Redis so that every worker
shares one token per Daraja app (Daraja may invalidate the previous token when a new one is
asked for, REFERENCE §1, so workers fetching their own would knock each other out).

A cache is anything with ``get(key) -> str | None`` and ``set(key, value, ttl)`` (seconds)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class TokenCache(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str, ttl: float) -> None: ...


class MemoryTokenCache:
    """Tokens held in this process until their time is up. ``clock`` is for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            value, expires_at = item
            if self._clock() >= expires_at:
                del self._items[key]
                return None
            return value

    def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._items[key] = (value, self._clock() + ttl)

    def __repr__(self) -> str:  # never the tokens themselves
        return f"<MemoryTokenCache {len(self._items)} token(s)>"


class RedisTokenCache:
    """Tokens in Redis (``redis.Redis`` or anything with its ``get``/``set(ex=)``), expiring
    with Redis's own TTL so a stale token is never served."""

    def __init__(self, redis_client, prefix: str = "marejesho:"):
        self.redis = redis_client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, **kwargs) -> RedisTokenCache:
        import redis  # only when a Redis is configured

        return cls(redis.Redis.from_url(url), **kwargs)

    def get(self, key: str) -> str | None:
        value = self.redis.get(self.prefix + key)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        return value or None

    def set(self, key: str, value: str, ttl: float) -> None:
        self.redis.set(self.prefix + key, value, ex=max(1, int(ttl)))

    def __repr__(self) -> str:
        return f"<RedisTokenCache prefix={self.prefix!r}>"
