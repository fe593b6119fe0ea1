"""ConvAI2's official evaluation: `next_word_probability` in both modes against a hand
computation, the official perplexity loop against a direct sum, the official dictionary
from the data installed, and `parlai convai2_official_eval` against `parlai eval_model`.

Hand computations run the tiny GPT-2 through transformers' own modules on whole sequences
(context + `<speaker1>` + partial reply + word), with no cache, no trie and no tree mask.
"""
import json
import math
import os

import pytest
import torch
from parlai.core.agents import Agent
from parlai.core.message import Message

from conftest import REPO, _save_tiny, run_parlai
from parlai_transfertransfo.agent import next_word
from parlai_transfertransfo.data import convai2, official_dict
from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.scripts.convai2_official_eval import setup_args
from parlai_transfertransfo.tools import convai2_official, official_ppl
from benchmarks.kill_resume import first_dialogs
from test_agent import first_example, make_agent

# two share a first token at the reply's start (good, goodness), three after a word (z...)
FIVE = {"good": 7, "goodness": 1, "zyzzyva": 2, "zzz": 0, "zq": 4}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random GPT-2 with room for whole ConvAI2 contexts (1024 positions)."""
    from transformers import GPT2Config, GPT2DoubleHeadsModel

    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=32, n_layer=2, n_head=2)
    return _save_tiny(tmp_path_factory.mktemp("tiny-gpt2-1024"), config, GPT2DoubleHeadsModel)


@pytest.fixture(scope="module")
def agent(tiny_dir, tmp_path_factory):
    return make_agent(tiny_dir, tmp_path_factory.mktemp("agent-data"), "-bs", 1)


def dictionary_of(freqs):
    d = official_dict.new_dictionary()
    for word, freq in freqs.items():
        d[word] = freq
    return d


def with_mode(agent, mode, dictionary):
    agent.opt["official_ppl"] = mode
    next_word.use_dictionary(agent, dictionary)
    return agent


def observe_hidden(agent, message):
    agent.reset()
    return agent.observe(Message({k: v for k, v in message.items() if k not in official_ppl.HIDDEN}))


_BOUNDARY = {}


def boundary_by_hand(agent):
    """Token ids whose text starts with whitespace, and `<eos>` (token by token)."""
    tok = agent.dict.hf_tokenizer
    if id(tok) not in _BOUNDARY:
        starts = [i for i in range(len(tok)) if tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)])[:1].isspace()]
        _BOUNDARY[id(tok)] = torch.tensor(starts + [agent.special.eos])
    return _BOUNDARY[id(tok)]


def word_log_probs(agent, obs, partial, words):
    """{word: (log p(its first token), log p(all its tokens, then a boundary))} after the
    observed context and `partial`, each word its own whole right-padded sequence through
    GPT-2's transformer and LM head."""
    lm, special = agent.model.double_heads.lm, agent.special
    start = obs["text_vec"].tolist() + [special.speaker1] + agent.dict.txt2vec(" ".join(partial))
    types_start = obs["text_types"].tolist() + [obs["reply_type"]] * (len(start) - obs["text_vec"].numel())
    seqs = [agent.dict.txt2vec((" " if partial else "") + w) for w in words]
    width = len(start) + max(map(len, seqs))
    ids = torch.full((len(seqs), width), special.pad)
    types, mask = ids.clone(), torch.zeros_like(ids)
    rows, cols, picks, at = [], [], [], len(start) - 1
    for j, seq in enumerate(seqs):
        n = len(start) + len(seq)
        ids[j, :n] = torch.tensor(start + seq)
        types[j, :n] = torch.tensor(types_start + [obs["reply_type"]] * len(seq))
        mask[j, :n] = 1
        picks += [(len(rows) + i, t) for i, t in enumerate(seq)]
        rows += [j] * (len(seq) + 1)
        cols += range(at, at + len(seq) + 1)
    with torch.no_grad():
        hidden = lm.transformer(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        logp = torch.log_softmax(lm.lm_head(hidden[rows, cols]).double(), -1)
    token_logp = logp[[r for r, _ in picks], [t for _, t in picks]].tolist()
    ends = torch.tensor([c for c, (r, nxt) in enumerate(zip(rows, rows[1:] + [-1])) if r != nxt])
    boundary_logp = logp[ends][:, boundary_by_hand(agent)].logsumexp(-1).tolist()
    out, k = {}, 0
    for w, seq, b in zip(words, seqs, boundary_logp):
        out[w] = (token_logp[k], sum(token_logp[k:k + len(seq)]) + b)
        k += len(seq)
    return out


@pytest.mark.parametrize("partial", [[], ["i", "am"]])
def test_five_words_equal_a_hand_computation_in_both_modes(agent, partial):
    obs = observe_hidden(agent, first_example())
    by_hand = word_log_probs(agent, obs, partial, FIVE)
    prefix = with_mode(agent, "prefix", dictionary_of(FIVE)).next_word_probability(partial)
    first = {w: agent.dict.txt2vec((" " if partial else "") + w)[0] for w in FIVE}
    for w in FIVE:  # p(first token) x (freq + 5) / (sum of freq + 5 over the words sharing it)
        group = sum(FIVE[v] + 5 for v in FIVE if first[v] == first[w])
        assert prefix[w] == pytest.approx(math.exp(by_hand[w][0]) * (FIVE[w] + 5) / group, rel=1e-4)
    assert max(sum(first[v] == first[w] for v in FIVE) for w in FIVE) == (2 if not partial else 3)

    exact = with_mode(agent, "exact", dictionary_of(FIVE)).next_word_probability(partial)
    assert set(exact) == set(FIVE)
    for w in FIVE:
        assert exact[w] == pytest.approx(math.exp(by_hand[w][1]), rel=1e-4)
    assert sum(exact.values()) <= 1
    assert exact["good"] != pytest.approx(exact["goodness"])  # a prefix pair stays apart


def test_the_boundary_tokens_start_a_word_or_end_the_reply(agent):
    tok, eos = agent.dict.hf_tokenizer, agent.special.eos
    ids = set(next_word.boundary_ids(tok, eos).tolist())
    assert eos in ids and tok.encode(" good")[0] in ids and tok.encode("good")[0] not in ids
    assert tok.encode("ness")[0] not in ids and tok.encode("\n")[0] in ids


@pytest.fixture(scope="module")
def one_dialog(tmp_path_factory):
    """The first real validation dialog as its own train and valid set (--valid-split 0)."""
    out = tmp_path_factory.mktemp("one")
    return ["-t", "convai2_file", "--convai2-file", first_dialogs(1, out / "one.txt"), "--valid-split", "0",
            "--datapath", str(out / "data")]


def test_the_official_loop_equals_a_direct_sum_of_exact_log_probabilities(agent, one_dialog):
    opt = setup_args().parse_args(one_dialog)
    teacher, dictionary = official_dict.teacher(opt, "convai2_file", "valid"), dictionary_of(FIVE)
    for i in range(2):  # the two examples' words; of the gold replies, only the first's
        message = teacher.act()
        dictionary.observe(dict(message, labels=message["eval_labels"] if i == 0 else None))
        dictionary.act()
    words = official_dict.offered_words(dictionary)
    assert len(words) > 40

    with_mode(agent, "exact", dictionary)
    agent.reset()
    result = official_ppl.evaluate(agent, official_dict.teacher(opt, "convai2_file", "valid"), dictionary, 2,
                                   log_every=0)

    teacher, loss, n = official_dict.teacher(opt, "convai2_file", "valid"), 0.0, 0
    agent.reset()
    for _ in range(2):
        message = teacher.act()
        obs = agent.observe(Message({k: v for k, v in message.items() if k not in official_ppl.HIDDEN}))
        gold = dictionary.tokenize(message["eval_labels"][0])
        for i, word in enumerate(gold):
            if word in dictionary:
                log_probs = word_log_probs(agent, obs, gold[:i], words)
                total = torch.logsumexp(torch.tensor([lp for _, lp in log_probs.values()], dtype=torch.float64), 0)
                loss -= log_probs[word][1] - total.item()
                n += 1
        agent.self_observe(Message({"text": message["eval_labels"][0]}))
    assert result["examples"] == 2 and result["scored_words"] == n > 15 and result["unknown_words"] > 0
    assert result["ppl"] == pytest.approx(math.exp(loss / n), rel=1e-5)


class UniformAgent(Agent):
    """The same score for every word of the official dictionary of its task."""

    def __init__(self, opt, shared=None):
        super().__init__(opt, shared)
        self.words = official_dict.offered_words(official_dict.build(opt, opt["task"], say=lambda line: None)[0])

    def next_word_probability(self, partial_out):
        return {w: 0.5 for w in self.words}


def test_a_uniform_distribution_gives_the_dictionary_size(one_dialog):
    lines = []
    opt = setup_args().parse_args(["-m", "test_official_eval:UniformAgent", "--metric", "ppl", "-ne", "4", *one_dialog])
    report = convai2_official.run(opt, say=lines.append)
    words = report["dictionary"]["words"]
    assert report["ppl"]["ppl"] == pytest.approx(words, rel=1e-12) and report["ppl"]["scored_words"] > 30
    assert f"FINAL PPL: {float(words)}" in lines
    assert report["dictionary"]["tokens"] == words + 4  # null, start, end, unk: never offered


def test_convai2_official_eval_prints_the_official_lines_and_matches_eval_model(tiny_dir, one_dialog, tmp_path):
    from parlai_transfertransfo.weights.model_files import write_model_file

    write_model_file(tiny_dir, str(tmp_path / "model"), str(tmp_path / "data"), model_name=tiny_dir)
    common = ["-mf", tmp_path / "model", *one_dialog, "-ne", 5, "--inference", "greedy", "-bs", 2]
    status, out = run_parlai("convai2_official_eval", *common, "--report-filename", tmp_path / "official.json")
    assert status == 0, out[-3000:]
    status, log = run_parlai("eval_model", *common, "--report-filename", tmp_path / "eval_model.json")
    assert status == 0, log[-3000:]
    with open(tmp_path / "official.json") as f:
        report = json.load(f)
    with open(tmp_path / "eval_model.json") as f:
        expected = json.load(f)["report"]
    assert report["eval_model_examples"] == expected["exs"] > 1  # -ne counts batches of -bs 2
    assert (report["hits@1"], report["f1"]) == (expected["hits@1"], expected["f1"])
    assert report["ppl"]["examples"] == 5 and report["ppl"]["mode"] == "prefix"
    final = [line for line in out.splitlines() if line.startswith("FINAL ")]
    ppl = float(f"{report['ppl']['ppl']:.4g}")
    assert final == [f"FINAL Hits@1: {report['hits@1']}", f"FINAL F1: {report['f1']}", f"FINAL PPL: {ppl}"]
    row = report["table_row"]
    assert out.splitlines()[out.splitlines().index("|---|---|---|---|---|") + 1] == row
    assert row.startswith(f"| `{tmp_path / 'model'}` | `convai2_file` valid, 5 examples; dictionary from train+valid")
    assert row.endswith(f"| {report['ppl']['ppl']:.2f} (official word ppl, prefix) |")


def dialog_file(path, turns):
    """A ConvAI2 file of one dialog: (partner utterance, reply) turns, two candidates each."""
    lines = ["1 your persona: alpha beta."]
    for i, (text, reply) in enumerate(turns, start=2):
        lines.append(f"{i} {text}\t{reply}\t\tother cand|{reply}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_dictionary_is_train_and_valid_when_train_is_installed_else_valid_alone(tmp_path):
    source, datapath = tmp_path / "src", tmp_path / "data"
    source.mkdir()
    dialog_file(source / "valid_self_original.txt", [("gamma delta !", "onlyinvalidreplies"), ("gamma", "again")])
    convai2.install(str(source), str(datapath), say=lambda line: None)
    opt = setup_args().parse_args(["--datapath", str(datapath)])
    lines = []
    dictionary, source_name, read = official_dict.build(opt, say=lines.append)
    assert source_name == official_dict.VALID_ONLY and read == 2 and len(lines) == 1
    assert lines[0].startswith("official dictionary: no train split for convai2:self")
    # the valid replies are eval_labels, which ParlAI's dictionary does not read
    assert dict((w, dictionary.freq[w]) for w in official_dict.offered_words(dictionary)) == {
        "your": 1, "persona": 1, ":": 1, "alpha": 1, "beta": 1, ".": 1, "gamma": 2, "delta": 1, "!": 1}

    dialog_file(source / "train_self_original.txt", [("Epsilon, zeta", "eta theta"), ("zeta", "IOTA")])
    convai2.install(str(source), str(datapath), force=True, say=lambda line: None)
    lines = []
    dictionary, source_name, read = official_dict.build(opt, say=lines.append)
    assert source_name == official_dict.TRAIN_AND_VALID and read == 4 and not lines
    words = official_dict.offered_words(dictionary)
    assert len(dictionary) == len(words) + 4 == 15 + 4  # 9 above, and epsilon , zeta eta theta iota (train)
    assert (dictionary.freq["zeta"], dictionary.freq["iota"], dictionary.freq["persona"]) == (2, 1, 2)


def test_bad_input_gets_one_line(agent, tiny_dir, one_dialog, tmp_path):
    def error(*args):
        with pytest.raises(TransfertransfoError) as err:
            convai2_official.run(setup_args().parse_args(["-m", "transfertransfo", "-mf", "x", *map(str, args)]),
                                 say=lambda line: None)
        assert "\n" not in err.value.message
        return err.value.message

    assert error("--official-ppl", "fast") == "--official-ppl fast: choose prefix or exact"
    assert error("--metric", "bleu") == "--metric bleu: choose all, ppl, hits, f1"
    assert error("--metric", "ppl", "-bs", 8).startswith("--metric ppl runs ConvAI2's official perplexity one "
                                                         "example at a time")
    # a ConvAI2 install without the valid set, or with an empty one
    dpath = tmp_path / "data" / "ConvAI2"
    dpath.mkdir(parents=True)
    (dpath / "train_self_original.txt").write_text("")
    from parlai.core.build_data import mark_done

    mark_done(str(dpath), convai2.VERSION)
    for _ in range(2):
        opt = setup_args().parse_args(["--datapath", str(tmp_path / "data")])
        with pytest.raises(TransfertransfoError) as err:
            official_dict.build(opt, say=lambda line: None)
        assert "parlai install_convai2" in err.value.message and "\n" not in err.value.message
        (dpath / "valid_self_original.txt").write_text("")

    agent.opt["official_ppl"] = "fast"
    with pytest.raises(TransfertransfoError, match="--official-ppl fast: choose prefix or exact"):
        with_mode(agent, "fast", dictionary_of(FIVE)).next_word_probability([])


@pytest.fixture(scope="module")
def word_level_dir(tmp_path_factory):
    """A tiny random Llama whose tokenizer knows a few whole words and nothing else."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted(set("your persona : i read twenty books a year . hello what are doing today ? good".split()))
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("word-level")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(path)
    config = LlamaConfig(vocab_size=len(vocab) + 5, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("mode", ["prefix", "exact"])
def test_a_word_the_tokenizer_cannot_encode_gets_the_smallest_probability(word_level_dir, tmp_path, mode):
    agent = make_agent(word_level_dir, tmp_path, "-bs", 1)
    observe_hidden(agent, first_example())
    dictionary = dictionary_of({"good": 3, "zyzzyva": 1, "books": 2})
    probs = with_mode(agent, mode, dictionary).next_word_probability(["i"])
    assert probs["zyzzyva"] == next_word.SMALLEST > 0 and min(probs["good"], probs["books"]) > 1e-6
    assert agent._next_words.unencodable == {"zyzzyva"}
    assert agent._next_words.boundary is None  # whole words: no boundary token to add
    loss, scored, unknown = official_ppl.score_reply(agent, dictionary, "good zyzzyva hello books")
    assert (scored, unknown) == (3, 1) and 700 < loss < 800  # the smallest double is e^-708


def test_exact_needs_a_backbone_that_continues_a_cache(tiny_openai_gpt_dir, tmp_path):
    agent = make_agent(tiny_openai_gpt_dir, tmp_path, "-bs", 1)
    observe_hidden(agent, first_example())
    with pytest.raises(TransfertransfoError, match="--official-ppl exact continues the context's cached"):
        with_mode(agent, "exact", dictionary_of(FIVE)).next_word_probability([])
    assert with_mode(agent, "prefix", dictionary_of(FIVE)).next_word_probability([])["good"] > 0
