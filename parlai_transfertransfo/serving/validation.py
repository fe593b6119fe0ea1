"""What a request's fields may hold, checked at the edge, before anything is queued.

Types are strict where OpenAI's API is (no `"0.5"` for a number, no `5.0` for an integer,
no `"yes"` for a boolean), numbers are finite, and text is text: a JSON string may carry
a lone surrogate (`"\\ud800"`), which no UTF-8 response can hold, so it is refused with
the field's name instead of being stored. Every error names its field by its full path
(`messages.2.content`, `stream_options.include_usage`).

The sampler's own limits (vLLM draws the same lines): a temperature below
`MIN_TEMPERATURE` cannot be divided by safely and means greedy decoding, as 0 does;
`top_k` is at most the vocabulary; stop strings are bounded (each one is searched for at
every decoding step).
"""
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MIN_TEMPERATURE = 1e-5  # vLLM's _SAMPLING_EPS: below it, greedy
MAX_STOP = 4  # OpenAI's limit
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20  # OpenAI's limit


def _text(value: str) -> str:
    for i, ch in enumerate(value):
        if "\ud800" <= ch <= "\udfff":
            raise PydanticCustomError(
                "lone_surrogate",
                "character {position} is a lone surrogate (U+{code}), which is not text: send the "
                "character itself, or a surrogate pair",
                {"position": i, "code": f"{ord(ch):04X}"})
    return value


Text = Annotated[str, AfterValidator(_text)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

# parts of pydantic's error locations that name a member of a union, not a field:
# `str`, `int`, `list[ContentPart]`, `function-after[...]`, `literal['a','b']`, `ContentPart`
_TYPE_NAMES = {"str", "int", "float", "bool", "bytes", "none"}


def _is_field(part):
    if isinstance(part, int):
        return True
    return part not in _TYPE_NAMES and part.isidentifier() and part == part.lower()


def describe_validation_error(errors):
    """(one-line message naming the field by its full path, that path) for pydantic's
    errors. Where a union's members all failed, the one that got furthest is reported."""
    if errors and errors[0].get("type") == "json_invalid":
        loc = [p for p in errors[0].get("loc", ()) if p != "body"]
        where = f" at character {loc[0]}" if loc else ""
        ctx = errors[0].get("ctx", {}).get("error", "decode error")
        return f"the request body is not valid JSON{where}: {ctx}", None

    def path(error):
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "path", "query"):
            loc = loc[1:]
        return [str(p) for p in loc if _is_field(p)]

    error = max(errors, key=lambda e: len(e.get("loc", ())))
    name = ".".join(path(error)) or "body"
    message = "this field is required" if error.get("type") == "missing" else error.get("msg", "invalid value")
    return f"{name}: {message}", name
