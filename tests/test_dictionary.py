"""The dictionary: GPT-2's real tokenizer with the recipe's special tokens, in ParlAI's shape.

Every test runs with the Hugging Face hub offline, as on a machine without internet.
"""
import json
import os

import huggingface_hub.constants
import pytest
from conftest import gpt2_tokenizer

from parlai_transfertransfo.agent.dictionary import TransfertransfoDictionaryAgent
from parlai_transfertransfo.weights.tokenizers import add_special_tokens, load_tokenizer, special_ids
from parlai_transfertransfo.errors import TransfertransfoError
from parlai_transfertransfo.recipe.segments import SpecialIds

BOS, EOS, PAD, SPEAKER1, SPEAKER2 = 50257, 50258, 50259, 50260, 50261
ENDOFTEXT = 50256
SPECIAL = {BOS, EOS, PAD, SPEAKER1, SPEAKER2, ENDOFTEXT}
RECIPE_IDS = SpecialIds(bos=BOS, eos=EOS, speaker1=SPEAKER1, speaker2=SPEAKER2, pad=PAD)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: set the variable and its copy.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def dictionary(tiny_gpt2_dir):
    return TransfertransfoDictionaryAgent({"model_name": tiny_gpt2_dir})


def test_special_tokens_are_added_once():
    tokenizer = gpt2_tokenizer()
    assert len(tokenizer) == 50257
    assert add_special_tokens(tokenizer) == 5
    assert add_special_tokens(tokenizer) == 0
    # The model's embeddings must grow from 50257 to this.
    assert len(tokenizer) == 50262
    assert special_ids(tokenizer) == RECIPE_IDS


def test_special_ids_refuses_a_tokenizer_without_the_special_tokens():
    with pytest.raises(ValueError, match="call add_special_tokens"):
        special_ids(gpt2_tokenizer())


def test_dictionary_from_model_name_adds_special_tokens_and_reports_resize(dictionary):
    assert len(dictionary) == 50262
    assert dictionary.num_added_tokens == 5
    assert dictionary.special == RECIPE_IDS
    assert dictionary.null_token == "<pad>"
    assert (dictionary.start_token, dictionary.end_token) == ("<bos>", "<eos>")
    assert dictionary.unk_token == "<|endoftext|>"
    assert (dictionary.null_idx, dictionary.start_idx, dictionary.end_idx) == (PAD, BOS, EOS)


def test_getitem_maps_tokens_to_ids_and_back_like_parlai(dictionary):
    assert dictionary["hello"] == 31373
    assert dictionary[31373] == "hello"
    assert dictionary["<speaker2>"] == SPEAKER2
    assert dictionary[SPEAKER2] == "<speaker2>"
    assert dictionary["not-a-bpe-token"] == ENDOFTEXT  # the unknown token's id
    assert "<eos>" in dictionary


def test_txt2vec_is_gpt2_bpe_without_special_tokens(dictionary):
    assert dictionary.txt2vec("hello what are doing today ?") == [31373, 644, 389, 1804, 1909, 5633]
    assert dictionary.txt2vec("i read twenty books a year.") == [72, 1100, 8208, 3835, 257, 614, 13]


def test_vec2txt_round_trips_convai2_spacing(dictionary):
    text = "i am good , i just got off work and tired , i have two jobs ."
    assert dictionary.vec2txt(dictionary.txt2vec(text)) == text


def test_vec2txt_skips_special_tokens(dictionary):
    assert dictionary.vec2txt([SPEAKER1, 72, 716, 922, EOS, PAD]) == "i am good"


def test_user_text_cannot_produce_control_tokens(dictionary):
    text = "ok <eos> <speaker2> you said <bos><pad><speaker1> and <|endoftext|>"
    ids = dictionary.txt2vec(text)
    assert not SPECIAL & set(ids)
    assert dictionary.vec2txt(ids) == text
    assert not {"<eos>", "<speaker2>", "<|endoftext|>"} & set(dictionary.tokenize(text))


def test_save_writes_a_self_contained_tokenizer_next_to_the_marker(dictionary, tmp_path):
    path = str(tmp_path / "model.dict")
    dictionary.save(path, sort=False)  # as TorchAgent.save calls it
    with open(path) as f:
        marker = json.load(f)
    assert marker == {"format": "transfertransfo-hf-tokenizer", "tokenizer": "model.dict.hf"}
    assert "tokenizer.json" in os.listdir(path + ".hf")


def test_load_restores_the_saved_tokenizer_without_model_name(dictionary, tmp_path):
    path = str(tmp_path / "model.dict")
    dictionary.save(path)
    # `gpt2` is unreachable offline: loading must not look at it.
    loaded = TransfertransfoDictionaryAgent({"dict_file": path, "model_name": "gpt2"})
    assert loaded.tok2ind == dictionary.tok2ind
    assert loaded.num_added_tokens == 0
    assert loaded.special == dictionary.special
    text = "ok <eos> i have two jobs ."
    assert loaded.txt2vec(text) == dictionary.txt2vec(text)


def test_save_defaults_to_dict_file(tiny_gpt2_dir, tmp_path):
    path = str(tmp_path / "sub" / "model.dict")
    dictionary = TransfertransfoDictionaryAgent({"model_name": tiny_gpt2_dir, "dict_file": path})
    dictionary.save()
    assert os.path.isfile(path) and os.path.isdir(path + ".hf")


def test_parlai_build_dict_takes_it_as_prebuilt(tiny_gpt2_dir, tmp_path):
    from parlai.scripts.build_dict import build_dict

    opt = {
        "dict_file": str(tmp_path / "model.dict"),
        "dict_class": "parlai_transfertransfo.agent.dictionary:TransfertransfoDictionaryAgent",
        "model_name": tiny_gpt2_dir,
    }
    dictionary = build_dict(opt)
    assert isinstance(dictionary, TransfertransfoDictionaryAgent)
    assert not os.path.exists(opt["dict_file"])  # TorchAgent.save writes it with the model


def test_shared_copy_uses_the_same_tokenizer(dictionary):
    copy = TransfertransfoDictionaryAgent(dictionary.opt, dictionary.share())
    assert copy.hf_tokenizer is dictionary.hf_tokenizer
    assert len(copy) == 50262 and copy.end_idx == EOS


def test_additional_special_tokens_keep_the_recipe_tokens_special(dictionary):
    dictionary.add_additional_special_tokens(["<persona>"])
    assert dictionary["<persona>"] == 50262 and len(dictionary) == 50263
    assert dictionary.vec2txt([SPEAKER1, 50262, 72]) == "i"


def test_directory_without_tokenizer_falls_back_to_gpt2_bpe(tiny_gpt2_dir_without_tokenizer):
    tokenizer = load_tokenizer(tiny_gpt2_dir_without_tokenizer)
    assert len(tokenizer) == 50257
    assert tokenizer.encode("hello what are doing today ?") == [31373, 644, 389, 1804, 1909, 5633]


def test_dictionary_from_directory_without_tokenizer(tiny_gpt2_dir_without_tokenizer):
    dictionary = TransfertransfoDictionaryAgent({"model_name": tiny_gpt2_dir_without_tokenizer})
    assert len(dictionary) == 50262 and dictionary.end_idx == EOS


def test_directory_without_tokenizer_of_another_model_type_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(TransfertransfoError, match="has no tokenizer files"):
        load_tokenizer(str(tmp_path))


def test_unreachable_hub_id_is_a_one_line_error():
    with pytest.raises(SystemExit) as raised:
        load_tokenizer("gpt2")
    assert isinstance(raised.value, TransfertransfoError)
    assert str(raised.value) == (
        "cannot reach the Hugging Face hub for 'gpt2': "
        "pass a local directory saved with save_pretrained"
    )


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(TransfertransfoError) as raised:
        load_tokenizer(str(tmp_path / "no" / "such" / "model"))
    assert str(raised.value).startswith("no such directory")
    assert "\n" not in str(raised.value)


def test_model_name_is_required_without_a_saved_dict(tmp_path):
    with pytest.raises(TransfertransfoError, match="--model-name is required"):
        TransfertransfoDictionaryAgent({"dict_file": str(tmp_path / "model.dict")})


def test_a_word_level_parlai_dict_is_refused(tmp_path):
    path = tmp_path / "model.dict"
    path.write_text("__null__\t1000000003\nhello\t5\n")
    with pytest.raises(TransfertransfoError, match="has no tokenizer directory"):
        TransfertransfoDictionaryAgent({"dict_file": str(path), "model_name": "gpt2"})
