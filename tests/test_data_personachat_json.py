"""The recipe's personachat_self_original.json layout, built here from the real ConvAI2
validation dialogs: served exactly as the ConvAI2 text file serves them, and every missing
key or wrong type stops with its JSON path."""
import json
import os

import pytest

from parlai_transfertransfo.data import fbdialog, personachat_json
from parlai_transfertransfo.errors import TransfertransfoError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID_800 = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")


@pytest.fixture(scope="module")
def dialogs():
    return fbdialog.read_dialogs(VALID_800)


@pytest.fixture(scope="module")
def data(dialogs):
    return {
        "train": personachat_json.dialogs_to_json(dialogs[:700]),
        "valid": personachat_json.dialogs_to_json(dialogs[700:]),
    }


def _write(tmp_path, data, name="personachat_self_original.json"):
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_json_layout_is_the_recipes(data):
    first = data["train"][0]
    assert first["personality"][0] == "i read twenty books a year."
    assert first["utterances"][0]["history"] == ["hello what are doing today ?"]
    assert first["utterances"][1]["history"] == [
        "hello what are doing today ?",
        "i am good , i just got off work and tired , i have two jobs .",
        "i just got done watching a horror movie",
    ]
    assert len(first["utterances"][1]["candidates"]) == 20


def test_json_serves_the_same_episodes_as_the_convai2_text(tmp_path, dialogs, data):
    path = _write(tmp_path, data)
    valid = personachat_json.read_split(path, "valid")
    assert len(valid) == 100
    assert list(personachat_json.episodes(valid)) == list(fbdialog.episodes(dialogs[700:]))
    train = personachat_json.read_split(path, "train")
    assert sum(len(utterances) for _, utterances in train) == 5470


def _error(path, split="valid"):
    with pytest.raises(TransfertransfoError) as err:
        personachat_json.read_split(path, split)
    return str(err.value)


def _small(data):
    return {"train": json.loads(json.dumps(data["train"][:3])), "valid": json.loads(json.dumps(data["valid"][:3]))}


def test_missing_split_key(tmp_path, data):
    path = _write(tmp_path, {"train": data["train"][:2]})
    assert _error(path) == f"{path}: $: missing key 'valid' (keys found: 'train')"


def test_missing_personality(tmp_path, data):
    small = _small(data)
    del small["valid"][2]["personality"]
    path = _write(tmp_path, small)
    assert _error(path) == f"{path}: $.valid[2]: missing key 'personality' (keys found: 'utterances')"


def test_missing_candidates(tmp_path, data):
    small = _small(data)
    del small["train"][1]["utterances"][3]["candidates"]
    path = _write(tmp_path, small)
    assert _error(path, "train") == (
        f"{path}: $.train[1].utterances[3]: missing key 'candidates' (keys found: 'history')"
    )


def test_empty_candidates(tmp_path, data):
    small = _small(data)
    small["valid"][0]["utterances"][2]["candidates"] = []
    path = _write(tmp_path, small)
    assert _error(path) == (
        f"{path}: $.valid[0].utterances[2].candidates: candidates must be a non-empty list "
        "of strings, got an empty list"
    )


def test_history_item_not_a_string(tmp_path, data):
    small = _small(data)
    small["valid"][1]["utterances"][0]["history"] = [None]
    path = _write(tmp_path, small)
    assert _error(path) == f"{path}: $.valid[1].utterances[0].history[0]: expected a string, got null"


def test_dialog_not_an_object(tmp_path, data):
    small = _small(data)
    small["valid"][1] = ["hello"]
    path = _write(tmp_path, small)
    assert _error(path) == f"{path}: $.valid[1]: expected an object, got a list"


def test_not_json(tmp_path, data):
    text = json.dumps(_small(data), indent=1)
    path = _write(tmp_path, text[:2000])
    assert _error(path).startswith(f"{path}:")
    assert "not valid JSON" in _error(path)


def test_bad_encoding(tmp_path):
    path = _write(tmp_path, b'{"valid": [\n{"personality": ["j\'ai \xe9t\xe9"]}]}')
    assert _error(path) == f"{path}:2: not valid UTF-8 (byte 0xe9 at column 24)"


def test_empty_file(tmp_path):
    path = _write(tmp_path, "")
    assert _error(path) == f"{path}: empty file: no JSON"


def test_top_level_list(tmp_path):
    path = _write(tmp_path, "[]")
    assert _error(path) == f"{path}: $: expected an object, got an empty list"
