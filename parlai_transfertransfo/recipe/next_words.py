"""Next-word distributions over a fixed list of words, after a cached context: what
ConvAI2's official word-level perplexity asks a model for (`next_word_probability`).

A word is a token sequence here (the caller tokenizes it as it would follow the context;
an empty sequence is a word the tokenizer cannot encode, scored -inf). Two scores:

- `PrefixShares` (the recipe authors' way, Hugging Face's `convai_evaluation.py`): the
  probability of the word's first token, shared among the words that start with that token
  in proportion to (frequency + 5). One softmax per position; the shares are fixed.
- `exact_log_scores`: the word's own probability, the product of its tokens' probabilities
  and of a word boundary after them (`boundary_ids`: a token that starts the next word, or
  `<eos>`). Distinct words are then disjoint events, so their probabilities sum to at most 1.
  Every word needs the model run on its tokens, so the words share a `WordTrie`: each
  distinct token prefix runs once, as one token over the context's cached keys/values, in
  chunks of whole subtrees with a tree-shaped attention mask (a node sees the context, its
  ancestors and itself), with the positions and token type it has in the whole sequence.
"""
import math
from dataclasses import dataclass

import torch

from parlai_transfertransfo.recipe import kv_cache
from parlai_transfertransfo.recipe.packing import additive_mask
from parlai_transfertransfo.recipe.prefix import Prefix

SMOOTHING = 5  # the recipe authors' add-5 smoothing of word frequencies
CPU_CHUNK_NODES = 512  # trie nodes per forward pass on a CPU; more on a GPU
GPU_CHUNK_NODES = 4096


class PrefixShares:
    """log p(word) = log p(first token) + log((freq + 5) / sum of freq + 5 over the words
    with the same first token), fixed once for a list of words."""

    def __init__(self, sequences, freqs, smoothing=SMOOTHING):
        self.encodable = torch.tensor([len(s) > 0 for s in sequences], dtype=torch.bool)
        self.first = torch.tensor([s[0] if s else 0 for s in sequences], dtype=torch.long)
        weight = torch.tensor([f + smoothing for f in freqs], dtype=torch.float64) * self.encodable
        size = int(self.first.max()) + 1 if len(sequences) else 1
        total = torch.zeros(size, dtype=torch.float64).index_add_(0, self.first, weight)
        self.log_share = (weight / total[self.first].clamp(min=1e-300)).log()

    def log_scores(self, log_probs):
        """[W] float64 log scores from the next-token log-probabilities log_probs [V]."""
        first = self.first.to(log_probs.device)
        out = log_probs.double()[first] + self.log_share.to(log_probs.device)
        return out.masked_fill(~self.encodable.to(out.device), -math.inf)


@dataclass(frozen=True)
class Chunk:
    """Trie nodes run in one pass over a shared prefix: `nodes` [n] (parents before
    children), `parent` [n] (index into `nodes`, -1: a child of the prefix's end) and
    `depth` [n] (1: right after the prefix)."""

    nodes: torch.Tensor
    parent: torch.Tensor
    depth: torch.Tensor


@dataclass(frozen=True)
class Descend:
    """A subtree too large for a chunk: its root `node` continues the prefix alone, then
    `steps` run its children's subtrees over that longer prefix."""

    node: int
    steps: list


class WordTrie:
    """The words' token sequences as a trie: node 0 is the context's end, every other node
    a distinct token prefix of some word (its last token `token`, its `parent`)."""

    def __init__(self, sequences):
        children, token, parent = [{}], [-1], [-1]
        word_node = []
        for seq in sequences:
            node = 0
            for t in seq:
                nxt = children[node].get(t)
                if nxt is None:
                    nxt = len(token)
                    children[node][t] = nxt
                    children.append({})
                    token.append(t)
                    parent.append(node)
                node = nxt
            word_node.append(node if seq else -1)
        self.children = [list(c.values()) for c in children]
        self.token = torch.tensor(token, dtype=torch.long)
        self.parent = torch.tensor(parent, dtype=torch.long)
        self.word_node = torch.tensor(word_node, dtype=torch.long)
        self.size = [1] * len(token)  # nodes in each subtree; children come after parents
        for node in range(len(token) - 1, 0, -1):
            self.size[parent[node]] += self.size[node]
        self.depth_max = self._depth_max()
        self._plans = {}

    def __len__(self):
        return len(self.children)

    def _depth_max(self):
        depth = [0] * len(self.children)
        for node in range(1, len(depth)):
            depth[node] = depth[int(self.parent[node])] + 1
        return max(depth)

    def plan(self, chunk_nodes):
        """The passes that run every node: [Chunk | Descend], cached per chunk size."""
        if chunk_nodes not in self._plans:
            self._plans[chunk_nodes] = self._plan_under(0, chunk_nodes)
        return self._plans[chunk_nodes]

    def _plan_under(self, at, chunk_nodes):
        steps, group = [], []
        for child in self.children[at]:
            if self.size[child] > chunk_nodes:
                steps.append(Descend(child, self._plan_under(child, chunk_nodes)))
                continue
            if group and sum(self.size[c] for c in group) + self.size[child] > chunk_nodes:
                steps.append(self._chunk(group))
                group = []
            group.append(child)
        if group:
            steps.append(self._chunk(group))
        return steps

    def _chunk(self, tops):
        nodes, parent, depth, where, top = [], [], [], {}, set(tops)
        stack = list(reversed(tops))
        while stack:  # depth first: every parent before its children
            node = stack.pop()
            where[node] = len(nodes)
            up = int(self.parent[node])
            nodes.append(node)
            parent.append(-1 if node in top else where[up])
            depth.append(1 if parent[-1] < 0 else depth[parent[-1]] + 1)
            stack.extend(reversed(self.children[node]))
        as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
        return Chunk(as_long(nodes), as_long(parent), as_long(depth))


def exact_log_scores(heads, prefix: Prefix, trie: WordTrie, boundary_ids, reply_type, chunk_nodes=None):
    """[W] float64: log p(word's tokens, then a boundary) after one context `prefix`
    (batch 1, its last_logits set). boundary_ids: a LongTensor of the tokens that end a
    word (None: every word's last token ends the word itself, as with word-final BPE
    markers). reply_type: the token type of the reply segment (None: no types). -inf for a
    word that has no tokens."""
    device = prefix.last_logits.device
    if chunk_nodes is None:
        chunk_nodes = GPU_CHUNK_NODES if device.type == "cuda" else CPU_CHUNK_NODES
    run = _TrieRun(heads, trie, boundary_ids, reply_type, device)
    run.under(prefix, 0, prefix.last_logits[0].float(), trie.plan(chunk_nodes))
    word_node = trie.word_node.to(device)
    at = word_node.clamp(min=0)
    out = run.path[at] + run.boundary[at]
    return out.masked_fill(word_node.lt(0), -math.inf)


class _TrieRun:
    """Walks a trie's plan for one context: path[node] = log p(its tokens), boundary[node] =
    log p(a boundary right after them)."""

    def __init__(self, heads, trie, boundary_ids, reply_type, device):
        self.heads, self.trie, self.device = heads, trie, device
        self.boundary_ids = None if boundary_ids is None else boundary_ids.to(device)
        self.boundary_mask = None
        self.reply_type = reply_type
        self.token = trie.token.to(device)
        self.path = torch.zeros(len(trie), dtype=torch.float64, device=device)
        self.boundary = torch.zeros(len(trie), dtype=torch.float64, device=device)

    def _normalize(self, logits, rows, tokens):
        """(log p(tokens[i] | row rows[i]) [k], log p(boundary | each row) [n]) from logits
        [n, V], which this overwrites: one pass over the vocabulary, the boundary mass a
        product with its 0/1 mask."""
        picked = logits[rows, tokens]
        top = logits.max(-1, keepdim=True).values
        probs = logits.sub_(top).exp_()
        total = probs.sum(-1)
        lse = top.squeeze(-1) + total.log()
        picked = (picked - lse[rows]).double()
        if self.boundary_ids is None:
            return picked, torch.zeros_like(lse, dtype=torch.float64)
        if self.boundary_mask is None or self.boundary_mask.numel() != logits.size(-1):
            self.boundary_mask = torch.zeros(logits.size(-1), dtype=probs.dtype, device=self.device)
            self.boundary_mask[self.boundary_ids] = 1
        return picked, ((probs @ self.boundary_mask).log() - total.log()).double()

    def under(self, prefix, at, logits, steps):
        """Run `steps` below node `at`, whose state `prefix` ends with next-token logits [V]."""
        kids = torch.tensor(self.trie.children[at], dtype=torch.long, device=self.device)
        picked, boundary = self._normalize(logits.clone()[None], torch.zeros_like(kids), self.token[kids])
        self.boundary[at] = boundary[0]
        self.path[kids] = self.path[at] + picked
        for step in steps:
            if isinstance(step, Descend):
                ids = self.token[step.node].view(1, 1)
                types = None if self.reply_type is None else torch.full_like(ids, self.reply_type)
                _, _, longer = self.heads.extend(prefix, ids, types)
                self.under(longer, step.node, longer.last_logits[0].float(), step.steps)
            else:
                self._chunk(prefix, step)

    def _chunk(self, prefix, chunk):
        nodes, parent, depth = (t.to(self.device) for t in (chunk.nodes, chunk.parent, chunk.depth))
        logits = _tree_logits(self.heads, prefix, self.token[nodes], parent, depth, self.reply_type)
        inner = parent.ge(0)  # nodes whose parent is in the chunk: their token's log p at the parent
        picked, self.boundary[nodes] = self._normalize(logits, parent[inner], self.token[nodes[inner]])
        step = torch.zeros(nodes.numel(), dtype=torch.float64, device=self.device)
        step[inner] = picked
        for d in range(2, int(depth.max()) + 1):  # parents' paths are set before their children's
            sel = depth.eq(d)
            self.path[nodes[sel]] = self.path[nodes[parent[sel]]] + step[sel]


def _tree_logits(heads, prefix, ids, parent, depth, reply_type):
    """Next-token logits [n, V] (float32) at n trie nodes continuing a batch-1 prefix: one
    pass, each node seeing the prefix, its ancestors among the n, and itself."""
    n = ids.numel()
    allowed = torch.eye(n, dtype=torch.bool, device=ids.device)
    rows = torch.arange(n, device=ids.device)
    up = parent.clone()
    while bool(up.ge(0).any()):
        has = up.ge(0)
        allowed[rows[has], up[has]] = True
        up = torch.where(has, parent[up.clamp(min=0)], up)
    past_columns = prefix.mask.bool()[:, None, :].expand(1, n, prefix.mask.size(1))
    allowed = torch.cat([past_columns, allowed[None]], 2)
    dtype = heads.lm.get_input_embeddings().weight.dtype
    positions = prefix.next_position[:, None] + depth[None] - 1
    heads._check_positions(positions)
    types = None if reply_type is None else torch.full_like(ids[None], reply_type)
    cache = kv_cache.PackedPass(heads.config.num_hidden_layers, [(k, v) for k, v in prefix.kv])
    hidden = heads._hidden(ids[None], types, additive_mask(allowed, dtype), positions, cache.cache)
    return heads._lm_logits(hidden[0]).float()
