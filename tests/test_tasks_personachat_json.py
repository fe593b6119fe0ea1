"""`-t personachat_json`: the recipe's JSON, here built from the real ConvAI2 validation
dialogs (700 as `train`, 100 as `valid`), served like `-t convai2`; without a path, built
into the datapath as ParlAI tasks build their data, and a failed download says what to do."""
import json
import os

import pytest

from parlai_transfertransfo.data import fbdialog, personachat_json
from parlai_transfertransfo.errors import TransfertransfoError
from conftest import acts, run_parlai as parlai, teacher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID_800 = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")


@pytest.fixture(scope="module")
def json_path(tmp_path_factory):
    dialogs = fbdialog.read_dialogs(VALID_800)
    path = tmp_path_factory.mktemp("json") / "personachat_self_original.json"
    data = {
        "train": personachat_json.dialogs_to_json(dialogs[:700]),
        "valid": personachat_json.dialogs_to_json(dialogs[700:]),
    }
    path.write_text(json.dumps(data))
    return str(path)


def test_valid_from_the_command_line(json_path):
    status, out = parlai("display_data", "-t", "personachat_json", "--personachat-json", json_path, "-dt", "valid", "-n", "1")
    assert status == 0, out
    assert "loaded 100 episodes with a total of 777 examples" in out
    assert (
        "your persona: i have amazing children and grandchildren.\n"
        "your persona: i had cancer but its gone now.\n"
        "your persona: i can sew my own clothes.\n"
        "your persona: i am retired and living the great life.\n"
        "hello there who are you"
    ) in out


def test_messages_are_shaped_exactly_like_convai2s(json_path):
    for datatype in ("train:ordered", "valid", "test"):
        ours = acts(teacher("-t", "personachat_json", "--personachat-json", json_path, "-dt", datatype))
        same_dialogs = acts(
            teacher("-t", "convai2_file", "--convai2-file", VALID_800, "--valid-split", "100", "-dt", datatype)
        )
        assert {m.pop("id") for m in ours} == {"personachat_json"}
        assert {m.pop("id") for m in same_dialogs} == {"convai2_file"}
        assert ours == same_dialogs
    assert len(ours) == 777
    assert ours[0]["eval_labels"] == ["hello , how are you today ? i'm retired and enjoying it ."]
    assert ours[0]["label_candidates"][-1] == ours[0]["eval_labels"][0]


def test_a_malformed_json_is_one_line_with_its_json_path(tmp_path, json_path):
    with open(json_path) as f:
        data = json.load(f)
    del data["valid"][5]["utterances"][1]["history"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    status, out = parlai("display_data", "-t", "personachat_json", "--personachat-json", str(bad), "-dt", "valid")
    assert status == 1
    assert out.strip().splitlines()[-1] == (
        f"transfertransfo: {bad}: $.valid[5].utterances[1]: missing key 'history' (keys found: 'candidates')"
    )
    assert "Traceback" not in out


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(TransfertransfoError, match="--personachat-json .*nope.json: no such file"):
        teacher("-t", "personachat_json", "--personachat-json", str(tmp_path / "nope.json"))


def test_without_a_path_a_file_already_in_the_datapath_is_used_and_marked_built(tmp_path, json_path):
    import parlai.core.build_data as build_data

    dpath = tmp_path / "personachat_json"
    dpath.mkdir()
    (dpath / "personachat_self_original.json").symlink_to(json_path)
    t = teacher("-t", "personachat_json", "-dt", "valid", "--datapath", str(tmp_path))
    assert (t.num_episodes(), t.num_examples()) == (100, 777)
    assert build_data.built(str(dpath), "v1.0")


def test_a_failed_download_leaves_nothing_and_says_what_to_do(tmp_path):
    from parlai.tasks.personachat_json.build import build

    unreachable = "http://127.0.0.1:9/personachat_self_original.json"
    with pytest.raises(TransfertransfoError) as err:
        build({"datapath": str(tmp_path), "personachat_json": None}, url=unreachable)
    message = str(err.value)
    assert message.startswith(f"could not download {unreachable} (")
    assert message.endswith(
        "give the file with --personachat-json PATH, or put it at "
        f"{tmp_path}/personachat_json/personachat_self_original.json"
    )
    assert os.listdir(tmp_path) == []
