"""A per-client rate limit: at most `per_minute` events an address, in any burst, refilled
evenly over the minute (a token bucket per address).

The address is the connection's peer, or, behind a proxy that uvicorn is told to trust
(`--forwarded-allow-ips`), the client it names in X-Forwarded-For. Memory stays bounded:
an address's bucket is forgotten once it has refilled (pruned as the table doubles).
"""
import math
import threading
import time


class RateLimit:
    def __init__(self, per_minute, clock=time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self._buckets = {}  # address -> (tokens left, when)
        self._prune_at = 1024  # doubles with what is still live: pruning stays O(1) per event
        self._lock = threading.Lock()

    def take(self, address) -> float:
        """0.0 when `address` may go on (one event counted), else seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, when = self._buckets.get(address, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - when) * rate)
            if tokens < 1.0:
                self._buckets[address] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[address] = (tokens - 1.0, now)
            if len(self._buckets) > self._prune_at:
                self._forget_full(now, rate)
                self._prune_at = max(1024, 2 * len(self._buckets))
            return 0.0

    def _forget_full(self, now, rate):
        for address, (tokens, when) in list(self._buckets.items()):
            if tokens + (now - when) * rate >= self.per_minute:
                del self._buckets[address]


def retry_after(seconds) -> str:
    """Retry-After's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
