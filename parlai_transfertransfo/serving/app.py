"""The ASGI app: the page, its session API and the OpenAI API over one scheduler.

Every error, ours or FastAPI's (validation, unknown route, wrong method), is answered in
OpenAI's error JSON with a one-line message that names the field at fault.
"""
import logging
import os
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from parlai_transfertransfo.serving import chat_routes, openai_routes
from parlai_transfertransfo.serving.decoding import Decoding
from parlai_transfertransfo.serving.errors import APIError, error_response
from parlai_transfertransfo.serving.limits import BearerToken, BodyLimit
from parlai_transfertransfo.serving.openai_schema import Limits
from parlai_transfertransfo.serving.sessions import SessionStore

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
log = logging.getLogger("transfertransfo.serve")


@dataclass
class ServeConfig:
    model_id: str
    defaults: Decoding
    default_persona: list  # the bot's persona when an API request has no system message
    new_persona: object  # () -> the persona a new page session starts with
    random_persona: object  # () -> a random packaged training persona
    limits: Limits = field(default_factory=Limits)
    suggestions: int = 3
    api_key: str | None = None
    max_body_bytes: int = 262144
    session_ttl: float = 1800.0
    max_sessions: int = 1000
    created: int = field(default_factory=lambda: int(time.time()))


def create_app(scheduler, config: ServeConfig) -> FastAPI:
    app = FastAPI(title="parlai-transfertransfo", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = scheduler
    app.state.config = config
    app.state.sessions = SessionStore(config.session_ttl, config.max_sessions)
    app.include_router(openai_routes.router)
    app.include_router(chat_routes.router)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC, "index.html"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.model_id, "sessions": len(app.state.sessions),
                **scheduler.health()}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError):
        return error_response(err.status, err.message, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        return error_response(400, *describe_validation_error(err.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = err.detail if isinstance(err.detail, str) else str(err.detail)
        if err.status_code == 404 and message == "Not Found":
            message = f"no such path: {request.url.path}"
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(err.status_code, message, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        log.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(err).__name__}")

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.api_key:
        app.add_middleware(BearerToken, api_key=config.api_key)
    return app


def describe_validation_error(errors):
    """(one-line message naming the field, the field) for pydantic's first error."""
    error = errors[0]
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    if error.get("type") == "json_invalid":
        where = f" at character {loc[0]}" if loc else ""
        return f"the request body is not valid JSON{where}: {error.get('ctx', {}).get('error', 'decode error')}", None
    # pydantic names the member of a union that failed (e.g. `str`): not a field
    loc = [p for p in loc if not p.startswith(("str", "list[", "function-", "literal["))]
    name = ".".join(loc) or "body"
    message = error.get("msg", "invalid value")
    if error.get("type") == "missing":
        message = "this field is required"
    return f"{name}: {message}", name
