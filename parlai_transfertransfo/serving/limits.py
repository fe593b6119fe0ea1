"""Request guards as plain ASGI middleware: a body-size limit and an optional bearer token.

Both answer before the app sees the request, in OpenAI's error JSON. An oversized body is
read and discarded (up to DRAIN_FACTOR times the limit) before its 413 goes out: a client
that is still sending when the server closes gets a connection reset instead of the
answer (every Python client writes the whole body before it reads), so the 413 is
readable for any body up to that bound. Past it, the server answers at once and closes.
"""
import hmac
import json

from starlette.exceptions import HTTPException

from parlai_transfertransfo.serving.errors import error_body

PROTECTED = ("/v1/", "/api/", "/metrics", "/tokenize", "/detokenize")  # the page and its files stay public
DRAIN_FACTOR = 64  # 16 MiB at the default 256 KiB limit


async def _send_error(send, status, message, code=None, headers=()):
    body = json.dumps(error_body(status, message, code=code)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised while the app reads the body: FastAPI passes HTTPExceptions through to the
    app's handler (any other error there becomes a 400)."""

    def __init__(self, message):
        super().__init__(413, message)


class BodyLimit:
    """413 for a body over `max_bytes`: from Content-Length, or as soon as a chunked body
    passes the limit; the rest of the body is drained first (see the module docstring)."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes
        self.drain_bytes = DRAIN_FACTOR * max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body too large: this server takes at most {self.max_bytes} bytes (--max-body-bytes)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            if length.isdigit() and int(length) <= self.drain_bytes:
                await self._drain(receive, 0)
            return await self._refuse(send, message)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(message)
            return event

        async def tracking_send(event):
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._drain(receive, seen)
                await self._refuse(send, message)

    async def _drain(self, receive, seen):
        """Read and drop the body's rest, up to drain_bytes in all."""
        while seen <= self.drain_bytes:
            event = await receive()
            if event["type"] != "http.request":
                return
            seen += len(event.get("body", b""))
            if not event.get("more_body", False):
                return

    async def _refuse(self, send, message):
        await _send_error(send, 413, message, headers=[(b"connection", b"close")])


def has_key(scope, api_key) -> bool:
    """Whether the request carries `Authorization: Bearer <api_key>` (True with no key set)."""
    if not api_key:
        return True
    given = dict(scope["headers"]).get(b"authorization", b"")
    return hmac.compare_digest(given, f"Bearer {api_key}".encode())


class BearerToken:
    """401 unless `Authorization: Bearer <api_key>` on the API's paths."""

    def __init__(self, app, api_key):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED) and not has_key(scope, self.api_key):
            return await _send_error(
                send, 401, "missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                "with the key given to --api-key", code="invalid_api_key",
                headers=[(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)
