"""Checked reading of ConvAI2 text files: real validation dialogs in, ParlAI's own tuples
out; each kind of malformed line stops with one message naming the file and line."""
import os

import pytest

from parlai_transfertransfo.data import fbdialog
from parlai_transfertransfo.errors import TransfertransfoError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID_800 = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")


@pytest.fixture(scope="module")
def valid_lines():
    with open(VALID_800, encoding="utf-8") as f:
        return f.read().splitlines(keepends=True)


@pytest.fixture(scope="module")
def dialogs():
    return fbdialog.read_dialogs(VALID_800)


def test_reads_the_800_validation_dialogs(dialogs):
    assert len(dialogs) == 800
    assert sum(len(d.turns) for d in dialogs) == 6247
    first = dialogs[0]
    assert first.context == [
        "your persona: i read twenty books a year.",
        "your persona: i'm a stunt double as my second job.",
        "your persona: i only eat kosher.",
        "your persona: i was raised in a single parent household.",
    ]
    assert first.turns[0].text == "hello what are doing today ?"
    assert first.turns[0].labels == ["i am good , i just got off work and tired , i have two jobs ."]
    assert len(first.turns[0].candidates) == 20
    assert first.turns[0].candidates[-1] == first.turns[0].labels[0]
    assert dialogs[1].line == 13


def test_episodes_are_exactly_what_parlais_fbdialog_teacher_yields(dialogs):
    from parlai.core.teachers import FbDeprecatedDialogTeacher

    parlai_reader = FbDeprecatedDialogTeacher.setup_data(
        type("Reader", (), {"cloze": False})(), VALID_800
    )
    assert list(fbdialog.episodes(dialogs)) == list(parlai_reader)


def test_format_dialog_writes_the_file_back_byte_for_byte(dialogs):
    with open(VALID_800, encoding="utf-8") as f:
        assert "".join(fbdialog.format_dialog(d) for d in dialogs) == f.read()


def test_split_is_by_dialog_and_deterministic(dialogs):
    train = fbdialog.split_dialogs(dialogs, 0.125, "train")
    valid = fbdialog.split_dialogs(dialogs, 0.125, "valid")
    assert (len(train), len(valid)) == (700, 100)
    assert train + valid == dialogs
    assert sum(len(d.turns) for d in valid) == 777
    assert fbdialog.split_dialogs(dialogs, 100, "valid") == valid
    assert fbdialog.split_dialogs(dialogs, 0, "train") == dialogs


@pytest.mark.parametrize("value", [800, 1.5, -0.1])
def test_split_refuses_an_empty_or_odd_part(dialogs, value):
    with pytest.raises(TransfertransfoError, match="--valid-split"):
        fbdialog.split_dialogs(dialogs, value, "train")


def _write(tmp_path, lines, name="valid_self_original.txt"):
    path = tmp_path / name
    path.write_bytes(lines if isinstance(lines, bytes) else "".join(lines).encode("utf-8"))
    return str(path)


def _error(path, require_candidates=True):
    with pytest.raises(TransfertransfoError) as err:
        fbdialog.read_dialogs(path, require_candidates)
    return str(err.value)


def test_missing_tab_fields(tmp_path, valid_lines):
    lines = list(valid_lines[:24])
    lines[6] = lines[6].replace("\t", " ")
    path = _write(tmp_path, lines)
    assert _error(path) == (
        f"{path}:7: no tab-separated fields: expected a persona line or "
        "text<TAB>label<TAB>reward<TAB>cand1|cand2|...|gold"
    )


def test_missing_label(tmp_path, valid_lines):
    lines = list(valid_lines[:12])
    lines[5] = "6 i just got done watching a horror movie\t\t\tcand a|cand b\n"
    path = _write(tmp_path, lines)
    assert _error(path).startswith(f"{path}:6: no label after the first tab")


def test_no_candidates_where_they_are_required(tmp_path, valid_lines):
    lines = list(valid_lines[:12])
    lines[4] = lines[4].split("\t\t")[0] + "\n"
    path = _write(tmp_path, lines)
    assert _error(path) == (
        f"{path}:5: no candidates, and this file needs them "
        "(text<TAB>label<TAB>reward<TAB>cand1|cand2|...|gold)"
    )
    assert len(fbdialog.read_dialogs(path, require_candidates=False)) == 1


def test_gold_label_absent_from_its_candidates(tmp_path, valid_lines):
    lines = list(valid_lines[:12])
    text, label, reward, cands = lines[7].rstrip("\n").split("\t")
    lines[7] = "\t".join([text, label, reward, "|".join(cands.split("|")[:-1])]) + "\n"
    path = _write(tmp_path, lines)
    assert _error(path) == (
        f"{path}:8: gold label 'i work in the movies as well .' is not among its 19 candidates"
    )


def test_bad_encoding(tmp_path, valid_lines):
    raw = "".join(valid_lines[:12]).encode("utf-8").replace(b"horror movie\t", b"horr\xe9 movie\t", 1)
    path = _write(tmp_path, raw)
    assert _error(path) == f"{path}:6: not valid UTF-8 (byte 0xe9 at column 34)"


def test_episode_index_that_jumps(tmp_path, valid_lines):
    lines = list(valid_lines[:24])
    del lines[16]  # line "5 hi ! how are you doing tonight ?..." of the second dialog
    path = _write(tmp_path, lines)
    assert _error(path) == (
        f"{path}:17: dialog index jumps from 4 to 6 (expected 5, or 1 to start a new dialog)"
    )


def test_file_not_starting_at_index_one(tmp_path, valid_lines):
    path = _write(tmp_path, valid_lines[1:12])
    assert _error(path) == f"{path}:1: first line has dialog index 2, expected 1"


def test_line_without_index(tmp_path, valid_lines):
    lines = list(valid_lines[:12])
    lines[2] = lines[2].split(" ", 1)[1]
    path = _write(tmp_path, lines)
    assert _error(path) == f"{path}:3: line does not start with a dialog index: 'your persona: i only eat kosher.'"


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = _write(tmp_path, content)
    assert _error(path) == f"{path}: empty file: no dialogs"


def test_dialog_without_utterances(tmp_path, valid_lines):
    path = _write(tmp_path, valid_lines[:4] + valid_lines[12:24])
    assert _error(path) == f"{path}:1: dialog has no utterance lines"


def test_persona_after_the_first_utterance(tmp_path, valid_lines):
    lines = valid_lines[:5] + ["6 your persona: i only eat kosher.\n"]
    path = _write(tmp_path, lines)
    assert _error(path).startswith(f"{path}:6: no tab-separated fields")


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.txt")
    assert _error(path) == f"{path}: cannot read: No such file or directory"
