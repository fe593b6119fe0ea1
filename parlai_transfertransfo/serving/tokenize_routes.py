"""`POST /tokenize` and `POST /detokenize`, in vLLM's shapes.

    /tokenize    {"prompt": text} -> the text's token ids; or {"messages": [...]} -> the
                 context the model reads for that chat request (persona, history window,
                 the reply's `<speaker1>`): its `count` is the request's prompt_tokens
    /detokenize  {"tokens": [ids]} -> {"prompt": text}, special tokens written out

The handlers share the agent's tokenizer with the scheduler's thread: encoding and
decoding never change its state (no truncation, no padding is ever set on it), and they
run in a worker thread so that a long text never holds up the event loop.
"""
import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from parlai_transfertransfo.serving import dialogue
from parlai_transfertransfo.serving import openai_schema as schema
from parlai_transfertransfo.serving.errors import APIError
from parlai_transfertransfo.serving.openai_routes import check_model
from parlai_transfertransfo.serving.validation import Text

router = APIRouter()


class TokenizeRequest(BaseModel):
    model_config = schema.STRICT
    model: Text | None = None
    prompt: Text | None = None
    messages: list[schema.Message] | None = Field(None, min_length=1)
    add_special_tokens: bool | None = True  # vLLM's; this tokenizer adds none to text
    return_token_strs: bool | None = False


class DetokenizeRequest(BaseModel):
    model_config = schema.STRICT
    model: Text | None = None
    tokens: list[int]


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request):
    state = request.app.state
    agent, config = state.scheduler.agent, state.config
    if body.model is not None:
        check_model(request, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "prompt: give either prompt (text) or messages (a chat), not both nor neither", "prompt")
    if body.prompt is not None:
        if len(body.prompt) > config.limits.max_message_chars:
            raise APIError(400, f"prompt: {len(body.prompt)} characters; this server takes at most "
                           f"{config.limits.max_message_chars} (--max-message-chars)", "prompt")
        ids = await asyncio.to_thread(agent.dict.txt2vec, body.prompt)
    else:
        persona, utterances = schema.dialogue(body.messages, config.limits)
        ctx = await asyncio.to_thread(dialogue.build_context, agent, persona or config.default_persona, utterances,
                                      config.defaults.max_tokens, state.scheduler.max_context_tokens)
        ids = ctx.ids + [agent.special.speaker1]
    tokens = state.token_text
    return {"count": len(ids), "max_model_len": agent.max_positions, "tokens": ids,
            "token_strs": [tokens.text_of(i) for i in ids] if body.return_token_strs else None}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request):
    state = request.app.state
    if body.model is not None:
        check_model(request, body.model)
    vocab = len(state.scheduler.agent.dict.hf_tokenizer)
    for i, token in enumerate(body.tokens):
        if not 0 <= token < vocab:
            raise APIError(400, f"tokens.{i}: {token} is not a token id (the vocabulary has ids 0 to {vocab - 1})",
                           f"tokens.{i}")
    if len(body.tokens) > state.config.limits.max_message_chars:
        raise APIError(400, f"tokens: {len(body.tokens)} tokens; this server takes at most "
                       f"{state.config.limits.max_message_chars}", "tokens")
    text = await asyncio.to_thread(state.scheduler.agent.dict.hf_tokenizer.decode, body.tokens)
    return {"prompt": text}
