"""Browser sessions: each has its own dialogue, personas and decoding settings.

A session is reached only through its random id (the page keeps it for its tab), so no
session can read another's. Memory stays bounded: idle sessions expire after `ttl`
seconds, at most `max_sessions` live at once, and a session keeps its last
MAX_UTTERANCES utterances (the model reads only the recipe's window of them anyway).
A new session never pushes out one that is in use: when every place is held by a session
used in the last `ttl` seconds, creating one fails (the app answers 503), so a flood of
creations cannot evict anyone's conversation (and the app limits creations per client).
"""
import collections
import secrets
import threading
import time
from dataclasses import dataclass, field

MAX_UTTERANCES = 200


@dataclass
class Session:
    id: str
    persona: list  # the bot's persona sentences
    user_persona: list  # the user's, for suggestions ([]: none)
    settings: dict
    history: list = field(default_factory=list)  # {"role": "user" | "bot", "text": ...}
    notes: list = field(default_factory=list)  # what truncation dropped at the last reply
    job: object = None  # the reply being generated, if any
    last_used: float = 0.0

    @property
    def busy(self):
        return self.job is not None and not self.job.ended

    def utterances(self):
        return [turn["text"] for turn in self.history]

    def add_exchange(self, user_text, bot_text):
        self.history += [{"role": "user", "text": user_text}, {"role": "bot", "text": bot_text}]
        del self.history[:-MAX_UTTERANCES]

    def undo(self):
        """Remove the last exchange (the user's message and the bot's reply)."""
        del self.history[-2:]

    def public(self):
        """What the page sees."""
        return {"id": self.id, "persona": list(self.persona), "user_persona": list(self.user_persona),
                "settings": dict(self.settings), "history": [dict(t) for t in self.history],
                "notes": list(self.notes), "busy": self.busy}


class SessionsFull(Exception):
    """Every place is held by a session used in the last ttl seconds; `retry_after`: the
    seconds until the least recently used one expires."""

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = retry_after


class SessionStore:
    def __init__(self, ttl=1800.0, max_sessions=1000, clock=time.monotonic):
        self.ttl, self.max_sessions, self.clock = ttl, max_sessions, clock
        self._sessions = collections.OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._sessions)

    def create(self, persona, user_persona, settings) -> Session:
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.max_sessions:
                oldest = next(iter(self._sessions.values()))
                raise SessionsFull(
                    f"the server holds its most page sessions ({self.max_sessions}, --max-sessions), each used "
                    f"in the last {self.ttl:g} s (--session-ttl); try again later",
                    self.ttl - (self.clock() - oldest.last_used))
            session = Session(secrets.token_urlsafe(16), list(persona), list(user_persona), dict(settings),
                              last_used=self.clock())
            self._sessions[session.id] = session
            return session

    def get(self, session_id) -> Session | None:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is not None:
                session.last_used = self.clock()
                self._sessions.move_to_end(session_id)
            return session

    def _expire(self):
        now = self.clock()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used <= self.ttl:
                break
            self._sessions.popitem(last=False)
