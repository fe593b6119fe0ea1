"""`next_word_probability`: what ConvAI2's official word-level perplexity asks of an agent
(ParlAI's `projects/convai2/eval_ppl.py`).

The evaluation shows the agent an example with its label hidden; then, for each word i of
the gold reply that is in the official dictionary (data/official_dict.py), it asks
`next_word_probability(words[:i])` for {word: score} over that dictionary, and scores the
true word's share of the total.

As the recipe's authors did (Hugging Face's `convai_evaluation.py`): the partial reply is
the reply segment, the words joined by spaces and tokenized as the agent tokenizes
replies, after `<speaker1>`, with no `<eos>`. A word is scored as it would follow: its
tokens alone at the reply's start, with a leading space after a word. Two modes
(`--official-ppl`, recipe/next_words.py):

- `prefix` (default): p(the word's first token) x (freq + 5) / (sum of freq + 5 over the
  dictionary words with that first token): how the recipe's 17.51 was obtained;
- `exact`: p(the word's tokens, then a word boundary), over a trie of the dictionary's
  tokens: a true distribution (it sums to at most 1), at the cost of running the model on
  every distinct token prefix of the dictionary at every position.

Per example, the context runs once (the agent's encoder: context + `<speaker1>`) and each
call continues the previous call's prefix by the new word's tokens. A word the backbone's
tokenizer cannot encode (no tokens, or its unknown token) gets the smallest positive
probability, and is counted (`unencodable`).
"""
import sys

import torch
from parlai.utils import logging

from parlai_transfertransfo.agent import instances, option_checks
from parlai_transfertransfo.data import official_dict
from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe import next_words, segments

MODES = option_checks.OFFICIAL_PPL  # ("prefix", "exact")
SMALLEST = sys.float_info.min  # what a word with no probability of its own gets: never 0


def boundary_ids(tokenizer, eos):
    """Tokens that end the word before them: those starting with whitespace (the next word
    of a space-joined reply), and `<eos>`. None where the tokenizer does not encode spaces
    (word-final markers, as OpenAI GPT's `</w>`): a word's last token then ends it."""
    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    if encode("a b") == encode("a") + encode("b"):
        return None
    singles = [[i] for i in range(len(tokenizer))]
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer decodes them all at once
    texts = backend.decode_batch(singles, skip_special_tokens=False) if backend else map(tokenizer.decode, singles)
    starts = {i for i, text in enumerate(texts) if text[:1].isspace()}
    return torch.tensor(sorted(starts | {eos}), dtype=torch.long)


class NextWords:
    """One agent's official words, their token tables, and the current example's context."""

    def __init__(self, agent, dictionary):
        self.mode = agent.opt.get("official_ppl") or "prefix"
        if self.mode not in MODES:
            raise TransfertransfoError(f"--official-ppl {self.mode}: choose {' or '.join(MODES)}")
        heads = agent._double_heads()
        if self.mode == "exact" and not heads.reuses_prefixes():
            raise TransfertransfoError(
                f"--official-ppl exact continues the context's cached keys/values, which this {heads.kind} "
                "backbone cannot do (no cache, or a sliding window): use --official-ppl prefix"
            )
        self.words = official_dict.offered_words(dictionary)
        self.freqs = [dictionary.freq[w] for w in self.words]
        self.tokenizer = agent.dict.hf_tokenizer
        self.boundary = boundary_ids(self.tokenizer, agent.special.eos) if self.mode == "exact" else None
        self.tables, self.unencodable = {}, set()
        for after_word in (False, True):
            self._table(after_word)
        self.example = None  # (observation, context Prefix, reply type, tokens so far, their Prefix)

    def _table(self, after_word):
        """The words' token table as they follow the reply's start (False) or a word (True)."""
        if after_word not in self.tables:
            texts = [(" " + w) if after_word else w for w in self.words]
            encoded = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            unk = self.tokenizer.unk_token_id if self.tokenizer.unk_token is not None else None
            sequences = []
            for word, seq in zip(self.words, encoded):
                if not seq or (unk is not None and unk in seq):
                    self.unencodable.add(word)
                    seq = []
                sequences.append(seq)
            if self.mode == "prefix":
                self.tables[after_word] = next_words.PrefixShares(sequences, self.freqs)
            else:
                self.tables[after_word] = next_words.WordTrie(sequences)
        return self.tables[after_word]

    def probabilities(self, agent, partial_out):
        obs = agent.observation
        if obs is None or "text_vec" not in obs:
            raise TransfertransfoError("next_word_probability needs an observed example with a text first")
        table = self._table(bool(partial_out))
        tokens = agent.dict.txt2vec(" ".join(partial_out))
        depth = table.depth_max if isinstance(table, next_words.WordTrie) else 1
        prefix, reply_type = self._prefix(agent, obs, tokens, depth)
        if self.mode == "prefix":
            log_scores = table.log_scores(torch.log_softmax(prefix.last_logits[0].float(), -1))
        else:
            log_scores = next_words.exact_log_scores(agent._double_heads(), prefix, table, self.boundary, reply_type)
        scores = log_scores.exp().clamp(min=SMALLEST)
        return dict(zip(self.words, scores.tolist()))

    def _prefix(self, agent, obs, tokens, depth):
        """(Prefix after `<speaker1>` + tokens, reply type): this example's cached context,
        continued from the last call's partial reply when `tokens` extends it (the official
        loop adds one word per call), else from the context."""
        if self.example is None or self.example[0] is not obs or (
                self.example[1].next_position.item() + len(tokens) + depth > agent.max_positions):
            context, reply_type = self._context(agent, obs, len(tokens) + depth)
            self.example = (obs, context, reply_type, [], context)
        obs, context, reply_type, done, prefix = self.example
        if tokens[:len(done)] != done:
            done, prefix = [], context
        if len(tokens) > len(done):
            ids = torch.tensor([tokens[len(done):]], dtype=torch.long, device=context.last_logits.device)
            _, _, prefix = agent._double_heads().extend(prefix, ids, torch.full_like(ids, reply_type))
        self.example = (obs, context, reply_type, tokens, prefix)
        return prefix, reply_type

    def _context(self, agent, obs, reply_tokens):
        """(Prefix of the context + `<speaker1>`, reply type): the observation's own context,
        or, when the reply would run past the model's positions, one cut to leave it room."""
        ids, types, reply_type = obs["text_vec"].tolist(), obs["text_types"].tolist(), obs["reply_type"]
        if len(ids) + 1 + reply_tokens > agent.max_positions:
            persona, history = instances.context_segments(agent, agent.history, reply_tokens + 1)
            ids, types, reply_type = segments.build_prefix(persona, history, agent.special)
        device = next(agent.model.parameters()).device
        ids = torch.tensor([ids], dtype=torch.long, device=device)
        types = torch.tensor([types], dtype=torch.long, device=device)
        prefix, _ = agent.model.encoder(ids, types, torch.ones_like(ids), torch.tensor([reply_type], device=device))
        return prefix, reply_type


def next_word_probability(agent, partial_out):
    """{word: probability} over the official dictionary for the word after `partial_out`
    (a list of words) in reply to the agent's last observation."""
    scorer = getattr(agent, "_next_words", None)
    if scorer is None:
        dictionary = getattr(agent, "official_dictionary", None)
        if dictionary is None:
            dictionary = official_dict.build(agent.opt, say=logging.warning)[0]
        scorer = agent._next_words = NextWords(agent, dictionary)
    agent.model.eval()
    with torch.no_grad(), agent._autocast():
        out = scorer.probabilities(agent, list(partial_out))
    if scorer.unencodable and not getattr(agent, "_warned_unencodable", False):
        agent._warned_unencodable = True
        some = ", ".join(sorted(scorer.unencodable)[:5])
        logging.warning(f"{len(scorer.unencodable)} official dictionary word(s) the backbone's tokenizer cannot "
                        f"encode get the smallest positive probability: {some}")
    return out


def use_dictionary(agent, dictionary):
    """Score over `dictionary` from now on (the evaluation command builds it once)."""
    agent.official_dictionary = dictionary
    agent._next_words = None
