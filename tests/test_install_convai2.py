"""`parlai install_convai2`, run as users run it, then ParlAI's own `-t convai2[:variant]`
with no download and no further flags.

The train files of every variant, which these machines cannot download, are rebuilt from
ParlAI's own teacher samples (tests/data/parlai_samples/*.yml); ParlAI's teachers must then
serve exactly those samples from our installed files.
"""
import os
import shutil
import tarfile

import pytest
import yaml

from parlai_transfertransfo.data import fbdialog
from conftest import FIRST_TEXT, run_parlai as parlai

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")
VALID_800 = os.path.join(DATA, "convai2", "valid_self_original_800.txt")

# persona part of the file name -> the sample files ParlAI's tests wrote for that teacher
SAMPLES = {
    "self_original": "convai2",
    "both_original": "convai2_both",
    "none_original": "convai2_none",
    "self_revised": "convai2_self_revised",
}


def sample_acts(stem, fold):
    with open(os.path.join(DATA, "parlai_samples", f"{stem}_{fold}.yml")) as f:
        return [act[0] for act in yaml.safe_load(f)["acts"]]


def dialog_from_sample(stem, fold):
    """The sampled first turns of a dialog, back in ConvAI2's text format."""
    acts = sample_acts(stem, fold)
    *context, first = acts[0]["text"].split("\n")
    dialog = fbdialog.Dialog(line=1, context=context)
    for i, act in enumerate(acts):
        labels = act.get("labels") or act["eval_labels"]
        text = first if i == 0 else act["text"]
        dialog.turns.append(fbdialog.Turn(text, labels, None, act["label_candidates"], 0))
    return fbdialog.format_dialog(dialog)


@pytest.fixture(scope="module")
def release_tgz(tmp_path_factory):
    """A .tgz laid out like a release: every variant's train and valid file in a folder,
    the 800 real validation dialogs as valid_self_original.txt, and a stray README."""
    root = tmp_path_factory.mktemp("release")
    folder = root / "convai2"
    folder.mkdir()
    for persona, stem in SAMPLES.items():
        (folder / f"train_{persona}.txt").write_text(dialog_from_sample(stem, "train"))
        if persona != "self_original":
            (folder / f"valid_{persona}.txt").write_text(dialog_from_sample(stem, "valid"))
    shutil.copyfile(VALID_800, folder / "valid_self_original.txt")
    (folder / "README.txt").write_text("ConvAI2 files\n")
    archive = root / "convai2_local.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="convai2")
    return str(archive)


@pytest.fixture(scope="module")
def installed_tgz(release_tgz, tmp_path_factory):
    datapath = str(tmp_path_factory.mktemp("datapath"))
    status, out = parlai("install_convai2", "--source", release_tgz, "--datapath", datapath)
    assert status == 0, out
    return datapath, out


def test_install_from_tgz_reports_files_checksums_and_variants(installed_tgz):
    datapath, out = installed_tgz
    assert sorted(os.listdir(os.path.join(datapath, "ConvAI2"))) == [
        ".built",
        "train_both_original.txt",
        "train_none_original.txt",
        "train_self_original.txt",
        "train_self_revised.txt",
        "valid_both_original.txt",
        "valid_none_original.txt",
        "valid_self_original.txt",
        "valid_self_revised.txt",
    ]
    assert sorted(os.listdir(datapath)) == ["ConvAI2"]  # no staging folder left behind
    assert "  ignored convai2/README.txt: not a ConvAI2 file name (e.g. valid_self_original.txt)" in out
    assert "  valid_self_original.txt: 800 dialogs, 6247 examples; checksum mismatch" in out
    assert "  train_self_revised.txt: 1 dialogs, 5 examples; checksum unknown" in out
    assert (
        "WARNING: train_both_original.txt is not the official convai2_fix_723.tgz file: "
        "6393 bytes, the official file has 153950608"
    ) in out
    assert (
        "WARNING: 5 file(s) differ from the official release: train_both_original.txt, "
        "train_self_original.txt, valid_both_original.txt, valid_none_original.txt, "
        "valid_self_original.txt"
    ) in out
    assert "  -t convai2:both, convai2:normalized_both, convai2:normalized_their: train, valid, test" in out
    assert "not installed: convai2:self_original:no_cands, convai2:both:no_cands" in out


@pytest.mark.parametrize("fold", ["train", "valid", "test"])
@pytest.mark.parametrize(
    "task, stem",
    [
        ("convai2", "convai2"),
        ("convai2:both", "convai2_both"),
        ("convai2:none", "convai2_none"),
        ("convai2:self_revised", "convai2_self_revised"),
        ("convai2:normalized", "convai2_normalized"),
    ],
)
def test_parlais_teachers_serve_their_own_samples_from_our_install(installed_tgz, task, stem, fold):
    from parlai.core.params import ParlaiParser
    from parlai.core.teachers import create_task_agent_from_taskname

    datapath, _ = installed_tgz
    datatype = "train:ordered" if fold == "train" else fold
    opt = ParlaiParser(True, False).parse_args(["-t", task, "-dt", datatype, "--datapath", datapath])
    teacher = create_task_agent_from_taskname(opt)[0]
    expected = sample_acts(stem, fold)
    if teacher.num_episodes() == 1:  # a rebuilt file ends its dialog after the sampled turns
        expected[-1]["episode_done"] = True
    assert [dict(teacher.act()) for _ in expected] == expected


def test_display_data_runs_a_variant_with_no_download(installed_tgz):
    datapath, _ = installed_tgz
    status, out = parlai("display_data", "-t", "convai2:both", "-dt", "train", "--datapath", datapath, "-n", "1")
    assert status == 0, out
    assert "loaded 1 episodes with a total of 5 examples" in out
    assert "partner's persona: i like canning and whittling." in out
    assert "Downloading" not in out


def test_install_from_directory_then_convai2_valid(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    shutil.copyfile(VALID_800, src / "valid_self_original.txt")
    datapath = str(tmp_path / "data")
    status, out = parlai("install_convai2", "--source", str(src), "--datapath", datapath)
    assert status == 0, out
    assert (
        "WARNING: valid_self_original.txt is not the official convai2_fix_723.tgz file: "
        "7287051 bytes, the official file has 9100907"
    ) in out
    assert f"installed 1 file(s) into {datapath}/ConvAI2 (marked built, version v5.0)" in out
    status, out = parlai("display_data", "-t", "convai2", "-dt", "valid", "--datapath", datapath, "-n", "1")
    assert status == 0, out
    assert "loaded 800 episodes with a total of 6247 examples" in out
    assert FIRST_TEXT in out
    assert "   i am good , i just got off work and tired , i have two jobs ." in out


def test_strict_checksum_mismatch_is_one_line_and_installs_nothing(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    shutil.copyfile(VALID_800, src / "valid_self_original.txt")
    datapath = tmp_path / "data"
    datapath.mkdir()
    status, out = parlai("install_convai2", "--source", str(src), "--datapath", str(datapath), "--strict")
    assert status == 1
    assert out.strip().splitlines()[-1] == (
        "transfertransfo: valid_self_original.txt is not the official convai2_fix_723.tgz file: "
        "7287051 bytes, the official file has 9100907 (--strict)"
    )
    assert "Traceback" not in out
    assert os.listdir(datapath) == []


def test_malformed_file_is_one_line_naming_file_and_line(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    with open(VALID_800, encoding="utf-8") as f:
        lines = f.readlines()[:12]
    text, label, reward, candidates = lines[5].rstrip("\n").split("\t")
    lines[5] = "\t".join([text, label, reward, candidates.replace(label, "something else")]) + "\n"
    bad = src / "valid_self_original.txt"
    bad.write_text("".join(lines))
    datapath = tmp_path / "data"
    status, out = parlai("install_convai2", "--source", str(src), "--datapath", str(datapath))
    assert status == 1
    assert out.strip().splitlines()[-1] == (
        f"transfertransfo: {bad}:6: gold label \"i rather read , i've read about 20 books this year .\" "
        "is not among its 20 candidates"
    )
    assert "Traceback" not in out
    assert not datapath.exists()


def test_a_variant_that_is_not_installed_is_one_line(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    shutil.copyfile(VALID_800, src / "valid_self_original.txt")
    datapath = str(tmp_path / "data")
    assert parlai("install_convai2", "--source", str(src), "--datapath", datapath)[0] == 0
    status, out = parlai("display_data", "-t", "convai2:both", "-dt", "valid", "--datapath", datapath)
    assert status == 1
    assert out.strip().splitlines()[-1] == (
        f"transfertransfo: {datapath}/ConvAI2/valid_both_original.txt is not installed (this ConvAI2 "
        "install has valid_self_original.txt); add it with: parlai install_convai2 --source DIR_OR_TGZ --force"
    )
