"""ParlAI's dictionary, backed by a Hugging Face tokenizer with the recipe's special tokens.

Shaped after ParlAI's `agents/hugging_face/dict.py` (not imported: that module pulls in
agents that break on today's stack).  A saved dictionary is a directory written by
`save_pretrained` next to the file ParlAI expects, so a model file works offline.
"""
import os

from parlai.core.agents import Agent
from parlai.core.build_data import modelzoo_path
from parlai.core.dict import DictionaryAgent
from parlai.utils import logging
from parlai.utils.io import PathManager

from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.weights.atomic_files import atomic_directory, write_json
from parlai_transfertransfo.weights.backbones import resolve_weights
from parlai_transfertransfo.weights.tokenizers import (
    add_special_tokens, load_local, load_tokenizer, special_ids, valid_unicode,
)

MARKER_FORMAT = "transfertransfo-hf-tokenizer"


class TransfertransfoDictionaryAgent(DictionaryAgent):
    """ParlAI's dictionary interface over a Hugging Face tokenizer.

    The tokenizer comes from the saved dictionary (`--dict-file`, `<model_file>.dict`)
    when one exists, else from `--model-name` plus the recipe's special tokens.
    `txt2vec` adds no special tokens, and reads special-token strings in user text as
    plain text, so nobody can type a `<speaker2>` or an `<eos>` into the model.
    `special` holds the SpecialIds; `num_added_tokens` says how many tokens this
    dictionary added to the pretrained vocabulary (the model must grow to `len(self)`).
    """

    def __init__(self, opt, shared=None):
        # DictionaryAgent.__init__ would build a word-level vocabulary; skip it.
        Agent.__init__(self, opt, shared)
        self.id = "Dictionary"
        if shared:
            self.hf_tokenizer = shared["hf_tokenizer"]
            self.tok2ind, self.ind2tok = shared["tok2ind"], shared["ind2tok"]
            self.num_added_tokens = shared["num_added_tokens"]
            self.freq = shared["freq"]
        else:
            self.num_added_tokens = 0
            dict_file = opt.get("dict_file")
            if dict_file:
                dict_file = modelzoo_path(opt.get("datapath"), dict_file)
            if dict_file and PathManager.exists(dict_file):
                self.load(dict_file)
            else:
                if not opt.get("model_name"):
                    raise TransfertransfoError(
                        "--model-name is required: a Hugging Face hub id or a local "
                        "directory saved with save_pretrained"
                    )
                # short names (smollm2-135m) resolve to a folder converted under datapath
                self._use(load_tokenizer(resolve_weights(opt["model_name"], opt.get("datapath"))))
            self.freq = {tok: 1 for tok in self.tok2ind}
        self.minfreq = opt.get("dict_minfreq", DictionaryAgent.default_minfreq)
        self.maxtokens = opt.get("dict_maxtokens", DictionaryAgent.default_maxtokens)
        self.lower = False  # the tokenizer decides; lower-casing would change the model's input
        self.tokenizer = "hf"
        self.textfields = opt.get("dict_textfields", DictionaryAgent.default_textfields).split(",")
        self.additional_special_tokens = []
        self.null_token, self.start_token, self.end_token = "<pad>", "<bos>", "<eos>"
        # Some tokenizers have no unk; ParlAI may block generating it, so <pad> is harmless.
        self.unk_token = self.hf_tokenizer.unk_token or "<pad>"
        self._unk_token_idx = self.tok2ind[self.unk_token]
        self.null_idx, self.start_idx = self[self.null_token], self[self.start_token]
        self.end_idx, self.unk_idx = self[self.end_token], self[self.unk_token]
        self.special = special_ids(self.hf_tokenizer)

    def never_generated_ids(self):
        """Every special token of the tokenizer but `<eos>`: the recipe's own control tokens
        and the backbone's (GPT-2's `<|endoftext|>`, SmolLM2's chat-template `<|im_start|>`
        ...), none of which a PERSONA-CHAT reply can contain."""
        special = {i for i, tok in self.hf_tokenizer.added_tokens_decoder.items() if tok.special}
        special |= set(self.hf_tokenizer.all_special_ids)
        special |= {self.special.bos, self.special.speaker1, self.special.speaker2, self.special.pad}
        return sorted(special - {self.special.eos})

    def _use(self, tokenizer):
        self.num_added_tokens = add_special_tokens(tokenizer)
        self.hf_tokenizer = tokenizer
        self.tok2ind = tokenizer.get_vocab()
        self.ind2tok = {i: tok for tok, i in self.tok2ind.items()}

    def is_prebuilt(self):
        """The vocabulary is the pretrained model's: `parlai build_dict` has nothing to do."""
        return True

    def share(self):
        shared = super().share()
        shared["hf_tokenizer"] = self.hf_tokenizer
        shared["num_added_tokens"] = self.num_added_tokens
        return shared

    def add_additional_special_tokens(self, additional_special_tokens):
        """ParlAI's `--special-tok-lst`: more control tokens, kept apart from user text."""
        self.additional_special_tokens = list(additional_special_tokens)
        self.hf_tokenizer.add_special_tokens(
            {"additional_special_tokens": self.additional_special_tokens},
            replace_extra_special_tokens=False,
        )
        for tok in self.additional_special_tokens:
            i = self.hf_tokenizer.convert_tokens_to_ids(tok)
            self.tok2ind[tok], self.ind2tok[i], self.freq[tok] = i, tok, 1

    def tokenize(self, text, building=False):
        return self.hf_tokenizer.tokenize(text, split_special_tokens=True)

    def txt2vec(self, text, vec_type=list):
        ids = self.txt2vecs([text])[0]
        return ids if vec_type is list else vec_type(ids)

    def txt2vecs(self, texts):
        """The ids of each text, special-token strings read as plain text: what
        `hf_tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)`
        gives, from its Rust tokenizer directly (half the time per text: the host side of
        training and evaluation tokenizes every candidate)."""
        backend = getattr(self.hf_tokenizer, "_tokenizer", None)
        texts = [valid_unicode(t) for t in texts]
        if backend is None or not hasattr(backend, "encode_batch"):  # a slow (Python) tokenizer
            return [self.hf_tokenizer.encode(t, add_special_tokens=False, split_special_tokens=True) for t in texts]
        before = backend.encode_special_tokens
        backend.encode_special_tokens = True
        try:
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        finally:
            backend.encode_special_tokens = before

    def vec2txt(self, vector, delimiter=" "):
        """Decoded text without special tokens (`delimiter` is ParlAI's; BPE needs none)."""
        return self.hf_tokenizer.decode([int(i) for i in vector], skip_special_tokens=True)

    def act(self):
        return {}

    def save(self, filename=None, append=False, sort=True):
        """Write the tokenizer to `filename + '.hf'`, and at `filename` the marker ParlAI
        checks for (it only tests that `<model_file>.dict` exists)."""
        filename = self.opt["dict_file"] if filename is None else filename
        directory = filename + ".hf"
        logging.info(f"Saving tokenizer to {directory}")
        # the folder first, the marker (what ParlAI checks for) last, each atomic: a kill
        # never leaves a marker in front of a half-written tokenizer
        atomic_directory(directory, self.hf_tokenizer.save_pretrained)
        write_json(filename, {"format": MARKER_FORMAT, "tokenizer": os.path.basename(directory)})

    def load(self, filename):
        """Restore from `save(filename)`, offline; `--model-name` is not consulted."""
        directory = filename + ".hf"
        if not os.path.isdir(directory):
            raise TransfertransfoError(
                f"dictionary {filename} has no tokenizer directory {directory}: it was not "
                "saved by the transfertransfo agent"
            )
        logging.info(f"Loading tokenizer from {directory}")
        self._use(load_local(directory))
