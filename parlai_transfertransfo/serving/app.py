"""The ASGI app: the page, its session API, the OpenAI API, /health and /metrics over one
scheduler.

Every error, ours or FastAPI's (validation, unknown route, wrong method), is answered in
OpenAI's error JSON with a one-line message that names the field at fault.
"""
import logging
import os
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from parlai_transfertransfo.serving import chat_routes, completions_routes, openai_routes, tokenize_routes
from parlai_transfertransfo.serving.decoding import Decoding
from parlai_transfertransfo.serving.errors import APIError, error_response
from parlai_transfertransfo.serving.limits import BearerToken, BodyLimit, has_key
from parlai_transfertransfo.serving.logprobs import TokenText
from parlai_transfertransfo.serving.metrics import CountRequests, Metrics
from parlai_transfertransfo.serving.openai_schema import Limits
from parlai_transfertransfo.serving.rate_limit import RateLimit
from parlai_transfertransfo.serving.sessions import SessionStore
from parlai_transfertransfo.serving.validation import describe_validation_error

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
    session_rate_limit: int = 10  # new page sessions a minute per client address (0: no limit)
    cors_origins: tuple = ()  # origins whose pages may call the API from a browser
    created: int = field(default_factory=lambda: int(time.time()))


def create_app(scheduler, config: ServeConfig) -> FastAPI:
    app = FastAPI(title="parlai-transfertransfo", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = scheduler
    app.state.config = config
    app.state.sessions = SessionStore(config.session_ttl, config.max_sessions)
    app.state.session_rate = RateLimit(config.session_rate_limit)
    app.state.token_text = TokenText(scheduler.agent.dict.hf_tokenizer)
    metrics = app.state.metrics = Metrics(scheduler, app.state.sessions)
    for module in (openai_routes, completions_routes, tokenize_routes, chat_routes):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC, "index.html"))

    @app.get("/health")
    async def health(request: Request):
        """200 while the model decodes, else 503; counters only for who holds the key."""
        alive = scheduler.alive()
        body = {"status": "ok" if alive else "unavailable", "model": config.model_id}
        if has_key(request.scope, config.api_key):
            body.update(sessions=len(app.state.sessions), **scheduler.health())
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus_metrics():
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError):
        return error_response(err.status, err.message, err.param, err.code, err.headers)

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

    # the last added runs first: CORS answers a browser's preflight (which carries no key),
    # then every answer is counted, then the key and the body size are checked
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.api_key:
        app.add_middleware(BearerToken, api_key=config.api_key)
    app.add_middleware(CountRequests, metrics=metrics)
    if config.cors_origins:
        # allow_private_network: a server on a private address or this machine is one its
        # operator opened to these origins' pages (Chromium's Private Network Access asks)
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_private_network=True, max_age=600)
    return app
