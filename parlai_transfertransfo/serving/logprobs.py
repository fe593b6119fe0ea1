"""Tokens' log-probabilities in OpenAI's shapes: chat's `logprobs.content` and the legacy
completions' `logprobs` (tokens, token_logprobs, top_logprobs, text_offset).

A logprob is the model's own log-softmax at that step (temperature 1, over the tokens the
model may generate), as vLLM reports it by default; the scheduler records one per
generated token (scheduler.py). A token is shown as its text and its UTF-8 bytes; a token
that is part of a character shows as `bytes:\\xe2\\x80`, as OpenAI writes it, and with
`return_tokens_as_token_ids` (vLLM's) as `token_id:123`.
"""

UNLIKELY = -9999.0  # OpenAI's floor: -inf is not JSON


def _byte_alphabet():
    """Byte-level BPE (GPT-2's, SmolLM2's) writes each byte as one printable character:
    printable Latin-1 bytes as themselves, every other byte as a code point from 256 up,
    in byte order. {character: byte}."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, shifted = {}, 256
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(shifted)] = byte
            shifted += 1
    return table


class TokenText:
    """Each token id's bytes and display text, for one tokenizer (the agent's)."""

    def __init__(self, hf_tokenizer):
        self.tokenizer = hf_tokenizer
        self.alphabet = _byte_alphabet()
        probe = " é\n"
        pieces = hf_tokenizer.convert_ids_to_tokens(hf_tokenizer.encode(probe, add_special_tokens=False))
        self.byte_level = (all(c in self.alphabet for p in pieces for c in p)
                           and b"".join(self._bytes(p) for p in pieces) == probe.encode())
        self._cache = {}

    def _bytes(self, piece):
        return bytes(self.alphabet[c] for c in piece)

    def bytes_of(self, token_id) -> bytes:
        found = self._cache.get(token_id)
        if found is None:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if self.byte_level and all(c in self.alphabet for c in piece):
                found = self._bytes(piece)
            else:
                found = self.tokenizer.decode([token_id]).encode("utf-8")
            if len(self._cache) < 200000:
                self._cache[token_id] = found
        return found

    def text_of(self, token_id, as_id=False) -> str:
        if as_id:
            return f"token_id:{token_id}"
        raw = self.bytes_of(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def entry(self, token_id, logprob, as_id):
        return {"token": self.text_of(token_id, as_id), "logprob": max(logprob, UNLIKELY),
                "bytes": list(self.bytes_of(token_id))}

    def chat(self, entries, as_id=False):
        """Chat completions' `logprobs` for recorded (token, logprob, top) entries."""
        content = []
        for token, logprob, top in entries:
            content.append({**self.entry(token, logprob, as_id),
                            "top_logprobs": [self.entry(t, lp, as_id) for t, lp in top]})
        return {"content": content, "refusal": None}

    def legacy(self, entries, as_id=False, offset=0):
        """The completions API's `logprobs`; offset: characters of the text before these."""
        body = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, logprob, top in entries:
            text = self.text_of(token, as_id)
            body["tokens"].append(text)
            body["token_logprobs"].append(max(logprob, UNLIKELY))
            body["top_logprobs"].append({self.text_of(t, as_id): max(lp, UNLIKELY) for t, lp in top})
            body["text_offset"].append(offset)
            offset += len(self.bytes_of(token).decode("utf-8", "replace").rstrip("\ufffd"))
        return body, offset
