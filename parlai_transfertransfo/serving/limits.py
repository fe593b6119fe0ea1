"""Request guards as plain ASGI middleware: a body-size limit and an optional bearer token.

Both answer before the app reads anything, in OpenAI's error JSON.
"""
import hmac
import json

from starlette.exceptions import HTTPException

from parlai_transfertransfo.serving.errors import error_body

PROTECTED = ("/v1/", "/api/")  # the page itself and its files stay public


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
    """413 for a body over `max_bytes`: at once from Content-Length, or as soon as a
    chunked body passes the limit."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body too large: this server takes at most {self.max_bytes} bytes (--max-body-bytes)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _send_error(send, 413, message)
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
                await _send_error(send, 413, message)


class BearerToken:
    """401 unless `Authorization: Bearer <api_key>` on the API's paths."""

    def __init__(self, app, api_key):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return await _send_error(
                    send, 401, "missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                    "with the key given to --api-key", code="invalid_api_key",
                    headers=[(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)
