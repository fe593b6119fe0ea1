"""`-t convai2_file`: any ConvAI2-format file by path, split by dialog, served exactly as
ParlAI's `-t convai2` serves the same file."""
import os

import pytest

from parlai_transfertransfo.data import convai2
from parlai_transfertransfo.errors import TransfertransfoError
from conftest import FIRST_TEXT, acts, run_parlai as parlai, teacher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID_800 = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")
DIALOG_701_TEXT = (
    "your persona: i have amazing children and grandchildren.\n"
    "your persona: i had cancer but its gone now.\n"
    "your persona: i can sew my own clothes.\n"
    "your persona: i am retired and living the great life.\n"
    "hello there who are you"
)


def test_train_part_of_a_split_from_the_command_line():
    status, out = parlai(
        "display_data", "-t", "convai2_file", "--convai2-file", VALID_800,
        "--valid-split", "0.125", "-dt", "train", "-n", "1",
    )  # fmt: skip
    assert status == 0, out
    assert "loaded 700 episodes with a total of 5470 examples" in out
    assert FIRST_TEXT in out


def test_valid_part_of_a_split_from_the_command_line():
    status, out = parlai(
        "display_data", "-t", "convai2_file", "--convai2-file", VALID_800,
        "--valid-split", "100", "-dt", "valid", "-n", "1",
    )  # fmt: skip
    assert status == 0, out
    assert "loaded 100 episodes with a total of 777 examples" in out
    assert DIALOG_701_TEXT in out
    assert "   hello , how are you today ? i'm retired and enjoying it ." in out


def test_serves_exactly_the_messages_of_parlais_convai2_teacher(tmp_path):
    convai2.install(os.path.dirname(_as_official(tmp_path)), str(tmp_path / "data"), say=lambda _: None)
    ours = acts(teacher("-t", "convai2_file", "--convai2-file", VALID_800, "-dt", "valid"))
    parlais = acts(teacher("-t", "convai2", "-dt", "valid", "--datapath", str(tmp_path / "data")))
    assert len(ours) == len(parlais) == 6247
    assert {m.pop("id") for m in ours} == {"convai2_file"}
    assert {m.pop("id") for m in parlais} == {"convai2"}
    assert ours == parlais
    assert sum(m["episode_done"] for m in ours) == 800


def _as_official(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    path = src / "valid_self_original.txt"
    path.symlink_to(VALID_800)
    return str(path)


def test_train_and_valid_parts_are_disjoint_dialogs():
    train = acts(teacher("-t", "convai2_file", "--convai2-file", VALID_800, "--valid-split", "0.125", "-dt", "train:ordered"))
    valid = acts(teacher("-t", "convai2_file", "--convai2-file", VALID_800, "--valid-split", "0.125", "-dt", "valid"))
    test = acts(teacher("-t", "convai2_file", "--convai2-file", VALID_800, "--valid-split", "0.125", "-dt", "test"))
    assert (len(train), len(valid)) == (5470, 777)
    assert valid == test
    first_texts = lambda ms: {m["text"] for m in ms if m["text"].startswith("your persona:")}  # noqa: E731
    assert len(first_texts(train)) == 700 and len(first_texts(valid)) == 100
    assert not first_texts(train) & first_texts(valid)
    assert train[0]["labels"] == ["i am good , i just got off work and tired , i have two jobs ."]


def test_no_candidates_file_needs_require_candidates_false(tmp_path):
    path = tmp_path / "valid_self_original_no_cands.txt"
    with open(VALID_800, encoding="utf-8") as f:
        lines = f.readlines()
    third_dialog = [i for i, line in enumerate(lines) if line.startswith("1 ")][2]
    path.write_text("".join(line.split("\t\t")[0].rstrip("\n") + "\n" for line in lines[:third_dialog]))
    with pytest.raises(TransfertransfoError) as err:
        teacher("-t", "convai2_file", "--convai2-file", str(path), "-dt", "valid")
    assert str(err.value).startswith(f"{path}:5: no candidates, and this file needs them")
    t = teacher("-t", "convai2_file", "--convai2-file", str(path), "-dt", "valid", "--require-candidates", "false")
    first = dict(t.act())
    assert first["text"] == FIRST_TEXT and "label_candidates" not in first
    assert (t.num_episodes(), t.num_examples()) == (2, 15)


def test_a_missing_option_is_one_line():
    status, out = parlai("display_data", "-t", "convai2_file", "-n", "1")
    assert status == 1
    assert out.strip().splitlines()[-1] == "transfertransfo: -t convai2_file needs --convai2-file PATH"
    assert "Traceback" not in out
