"""Serving: the chat page and an OpenAI-compatible API over one model, many sessions.

    parlai serve_transfertransfo -mf zoo:transfertransfo/smollm2_135m/model

One process loads the model once. `scheduler.Scheduler` owns it in one thread and decodes
every request that is in flight together: one model call per decoding step for all of
them (dynamic batching), each request keeping its own ParlAI tree search, so a reply is
the one the agent's `act` gives with the same settings. The HTTP side (FastAPI on uvicorn)
only validates, queues and streams.

    app.py                the ASGI app: routes, /health, /metrics, error handlers, middleware order
    limits.py             request guards: body size (drained, then 413), the optional bearer token
    rate_limit.py         per-client-address limit (new page sessions)
    validation.py         strict field types, text that is text, errors named by their full path
    errors.py             OpenAI's error JSON
    openai_routes.py      GET /v1/models, POST /v1/chat/completions (SSE when stream=true)
    completions_routes.py POST /v1/completions (the legacy API: a dialogue as ParlAI's text)
    tokenize_routes.py    POST /tokenize, /detokenize (vLLM's shapes)
    openai_schema.py      the OpenAI requests and what they mean here (decoding, dialogue)
    openai_responses.py   the OpenAI response bodies and stream chunks
    logprobs.py           tokens' logprobs in OpenAI's shapes (token text and bytes)
    metrics.py            Prometheus metrics (prometheus-client) and the request counter
    chat_routes.py        the page's session API (/api/sessions/...)
    sessions.py           per-browser-session dialogue, personas and settings, expiring
    dialogue.py           persona + history -> the recipe's context; suggestions' swapped view
    decoding.py           decoding settings and one reply's search, streamed as text
    kv_batch.py           many requests' key/value caches as one padded batch
    job.py                one request as the scheduler sees it: settings, events, times
    job_io.py             a handler's side of a job: submit, wait, stream, notice hang-ups
    scheduler.py          the batching loop that owns the model; one request's failure is its own
    static/               the page: plain HTML, CSS and JavaScript, served locally

An app: may import the agent, weights, data and the recipe. Never the plugin.
"""
