"""Serving: the chat page and an OpenAI-compatible API over one model, many sessions.

    parlai serve_transfertransfo -mf zoo:transfertransfo/smollm2_135m/model

One process loads the model once. `scheduler.Scheduler` owns it in one thread and decodes
every request that is in flight together: one model call per decoding step for all of
them (dynamic batching), each request keeping its own ParlAI tree search, so a reply is
the one the agent's `act` gives with the same settings. The HTTP side (FastAPI on uvicorn)
only validates, queues and streams.

    app.py            the ASGI app: routes, error handlers, the page's files
    limits.py         request guards: body size, the optional bearer token
    errors.py         OpenAI's error JSON
    openai_routes.py  GET /v1/models, POST /v1/chat/completions (SSE when stream=true)
    openai_schema.py  the OpenAI request/response shapes and their validation
    chat_routes.py    the page's session API (/api/sessions/...)
    sessions.py       per-browser-session dialogue, personas and settings, expiring
    dialogue.py       persona + history -> the recipe's context; suggestions' swapped view
    decoding.py       decoding settings and one reply's search, streamed as text
    kv_batch.py       many requests' key/value caches as one padded batch
    scheduler.py      the batching loop that owns the model
    static/           the page: plain HTML, CSS and JavaScript, served locally

An app: may import the agent, weights, data and the recipe. Never the plugin.
"""
