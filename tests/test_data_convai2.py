"""Installing ConvAI2 from local files, in process: checksums, atomic installs, and the
guard that turns ParlAI's download attempt or missing file into one clear line."""
import io
import os
import shutil
import tarfile

import pytest

from parlai_transfertransfo.data import convai2
from parlai_transfertransfo.errors import TransfertransfoError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID_800 = os.path.join(REPO, "tests", "data", "convai2", "valid_self_original_800.txt")
VALID_800_MD5 = "6b2be07afa6938f2913b4156c930d9e2"


def _quiet(_line):
    pass


@pytest.fixture
def source(tmp_path):
    """A directory as users bring it: the 800 real validation dialogs under their official name."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(VALID_800, src / "valid_self_original.txt")
    return str(src)


def _tree(path):
    return sorted(
        os.path.relpath(os.path.join(root, f), path) for root, dirs, files in os.walk(path) for f in dirs + files
    )


def test_verify_the_truncated_validation_file_against_the_release():
    check = convai2.verify(VALID_800, "valid_self_original.txt")
    assert (check.status, check.detail) == ("mismatch", "7287051 bytes, the official file has 9100907")


def test_verify_matches_size_and_md5_of_a_table_entry():
    table = {"valid_self_original.txt": (7287051, VALID_800_MD5)}
    check = convai2.verify(VALID_800, "valid_self_original.txt", table)
    assert (check.status, check.detail) == ("ok", f"7287051 bytes, MD5 {VALID_800_MD5}")
    assert convai2.md5sum(VALID_800) == VALID_800_MD5


def test_verify_accepts_an_md5_prefix_as_the_release_gives_for_valid_both():
    assert convai2.OFFICIAL_FILES["valid_both_original.txt"] == (9346213, "b3471427")
    table = {"valid_both_original.txt": (7287051, VALID_800_MD5[:8])}
    assert convai2.verify(VALID_800, "valid_both_original.txt", table).status == "ok"


def test_verify_reports_an_md5_mismatch_at_the_right_size():
    table = {"valid_self_original.txt": (7287051, "0" * 32)}
    check = convai2.verify(VALID_800, "valid_self_original.txt", table)
    assert (check.status, check.detail) == ("mismatch", f"MD5 {VALID_800_MD5}, the official file has {'0' * 32}")


def test_verify_knows_no_checksum_for_other_names():
    assert convai2.verify(VALID_800, "valid_self_revised.txt").status == "unknown"


def test_install_marks_the_folder_built_as_parlais_convai2_build(tmp_path, source):
    import parlai.core.build_data as build_data

    lines = []
    datapath = str(tmp_path / "data")
    assert convai2.install(source, datapath, say=lines.append) == ["valid_self_original.txt"]
    dpath = os.path.join(datapath, "ConvAI2")
    assert build_data.built(dpath, "v5.0")
    assert _tree(datapath) == ["ConvAI2", "ConvAI2/.built", "ConvAI2/valid_self_original.txt"]
    assert (
        "WARNING: valid_self_original.txt is not the official convai2_fix_723.tgz file: "
        "7287051 bytes, the official file has 9100907"
    ) in lines
    assert "  valid_self_original.txt: 800 dialogs, 6247 examples; checksum mismatch" in lines
    assert "  -t convai2, convai2:self_original, convai2:normalized: valid, test" in lines
    assert "missing, so those folds stop with an error: train_self_original.txt" in lines


def test_strict_mismatch_installs_nothing(tmp_path, source):
    datapath = tmp_path / "data" / "nested"
    with pytest.raises(TransfertransfoError) as err:
        convai2.install(source, str(datapath), strict=True, say=_quiet)
    assert str(err.value) == (
        "valid_self_original.txt is not the official convai2_fix_723.tgz file: "
        "7287051 bytes, the official file has 9100907 (--strict)"
    )
    assert not (tmp_path / "data").exists()


def test_strict_passes_when_every_known_file_matches(tmp_path, source):
    table = {"valid_self_original.txt": (7287051, VALID_800_MD5)}
    names = convai2.install(source, str(tmp_path / "data"), strict=True, say=_quiet, table=table)
    assert names == ["valid_self_original.txt"]


def test_a_malformed_file_leaves_the_datapath_as_it_was(tmp_path, source):
    datapath = tmp_path / "data"
    (datapath / "other_task").mkdir(parents=True)
    (datapath / "other_task" / "keep.txt").write_text("untouched")
    bad = os.path.join(source, "valid_both_original.txt")
    with open(VALID_800, encoding="utf-8") as f:
        lines = f.readlines()[:40]
    lines[30] = lines[30].replace("\t", " ")
    with open(bad, "w", encoding="utf-8") as f:
        f.writelines(lines)
    before = _tree(datapath)
    with pytest.raises(TransfertransfoError) as err:
        convai2.install(source, str(datapath), say=_quiet)
    assert str(err.value).startswith(f"{bad}:31: no tab-separated fields")
    assert _tree(datapath) == before


def test_an_existing_install_is_replaced_only_with_force(tmp_path, source):
    datapath = str(tmp_path / "data")
    convai2.install(source, datapath, say=_quiet)
    os.rename(os.path.join(source, "valid_self_original.txt"), os.path.join(source, "valid_none_original.txt"))
    with pytest.raises(TransfertransfoError, match="ConvAI2 already exists; --force replaces it"):
        convai2.install(source, datapath, say=_quiet)
    convai2.install(source, datapath, force=True, say=_quiet)
    assert _tree(datapath) == ["ConvAI2", "ConvAI2/.built", "ConvAI2/valid_none_original.txt"]


def test_what_a_failed_parlai_download_left_is_replaced_without_force(tmp_path, source):
    leftover = tmp_path / "data" / "ConvAI2"
    leftover.mkdir(parents=True)
    (leftover / "convai2_fix_723.tgz").write_bytes(b"\x1f\x8b partial")
    convai2.install(source, str(tmp_path / "data"), say=_quiet)
    assert _tree(str(tmp_path / "data")) == ["ConvAI2", "ConvAI2/.built", "ConvAI2/valid_self_original.txt"]


def test_a_failed_forced_install_keeps_the_old_one(tmp_path, source):
    datapath = str(tmp_path / "data")
    convai2.install(source, datapath, say=_quiet)
    before = _tree(datapath)
    with open(os.path.join(source, "valid_self_original.txt"), "w") as f:
        f.write("")
    with pytest.raises(TransfertransfoError, match="empty file"):
        convai2.install(source, datapath, force=True, say=_quiet)
    assert _tree(datapath) == before
    assert convai2.md5sum(os.path.join(datapath, "ConvAI2", "valid_self_original.txt")) == VALID_800_MD5


def test_a_source_without_convai2_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("hello")
    lines = []
    with pytest.raises(TransfertransfoError, match="no ConvAI2 files"):
        convai2.install(str(src), str(tmp_path / "data"), say=lines.append)
    assert any("ignored" in line and "notes.txt" in line for line in lines)
    assert not (tmp_path / "data").exists()


def test_tgz_members_are_installed_by_name_only(tmp_path):
    archive = tmp_path / "convai2.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(VALID_800, arcname="../../escape/valid_self_original.txt")
    datapath = str(tmp_path / "data")
    convai2.install(str(archive), datapath, say=_quiet)
    assert _tree(datapath) == ["ConvAI2", "ConvAI2/.built", "ConvAI2/valid_self_original.txt"]
    assert not (tmp_path / "escape").exists()


def test_a_truncated_tgz_is_reported(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(VALID_800, arcname="valid_self_original.txt")
    archive = tmp_path / "convai2_fix_723.tgz"
    archive.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(TransfertransfoError) as err:
        convai2.install(str(archive), str(tmp_path / "data"), say=_quiet)
    assert str(err.value) == (
        f"{archive}: not a readable .tgz archive "
        "(Compressed file ended before the end-of-stream marker was reached)"
    )
    assert not (tmp_path / "data").exists()


def test_the_release_archive_itself_is_verified(tmp_path):
    archive = tmp_path / "convai2_fix_723.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(VALID_800, arcname="valid_self_original.txt")
    lines = []
    convai2.install(str(archive), str(tmp_path / "data"), say=lines.append)
    size = os.path.getsize(archive)
    assert lines[0] == (
        f"WARNING: convai2_fix_723.tgz is not the official convai2_fix_723.tgz file: "
        f"{size} bytes, the official file has 429780162"
    )


def test_a_malformed_file_in_a_tgz_names_the_member(tmp_path):
    with open(VALID_800, encoding="utf-8") as f:
        lines = f.readlines()[:12]
    lines[7] = "9 " + lines[7].split(" ", 1)[1]
    data = "".join(lines).encode("utf-8")
    archive = tmp_path / "mine.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("convai2/valid_self_original.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(TransfertransfoError) as err:
        convai2.install(str(archive), str(tmp_path / "data"), say=_quiet)
    assert str(err.value) == (
        f"{archive}[convai2/valid_self_original.txt]:8: dialog index jumps from 7 to 9 "
        "(expected 8, or 1 to start a new dialog)"
    )


@pytest.fixture
def guarded(monkeypatch):
    import parlai.tasks.convai2.agents as agents

    monkeypatch.setattr(agents, "_path", agents._path)  # restored after the test
    convai2.guard_convai2_teachers(agents)
    return agents


def _opt(datapath, datatype):
    return {"datapath": datapath, "datatype": datatype, "task": "convai2"}


def test_guard_names_a_variant_file_that_is_not_installed(tmp_path, source, guarded):
    datapath = str(tmp_path / "data")
    convai2.install(source, datapath, say=_quiet)
    path = guarded._path(_opt(datapath, "valid"), "self_original", True)
    assert path == os.path.join(datapath, "ConvAI2", "valid_self_original.txt")
    with pytest.raises(TransfertransfoError) as err:
        guarded._path(_opt(datapath, "train"), "both_original", True)
    assert str(err.value) == (
        f"{datapath}/ConvAI2/train_both_original.txt is not installed (this ConvAI2 install has "
        "valid_self_original.txt); add it with: parlai install_convai2 --source DIR_OR_TGZ --force"
    )


def test_guard_is_applied_once(guarded):
    guarded_path = guarded._path
    convai2.guard_convai2_teachers(guarded)
    assert guarded._path is guarded_path


def test_guard_explains_a_failed_download(tmp_path, guarded, monkeypatch):
    def offline_build(opt):
        raise RuntimeError("Connection broken too many times. Stopped retrying.")

    monkeypatch.setattr(guarded, "build", offline_build)
    datapath = str(tmp_path / "data")
    with pytest.raises(TransfertransfoError) as err:
        guarded._path(_opt(datapath, "valid"), "self_original", True)
    assert str(err.value) == (
        f"ConvAI2 is not installed in {datapath}/ConvAI2 and could not be downloaded "
        "(Connection broken too many times. Stopped retrying.); install local files with: "
        "parlai install_convai2 --source DIR_OR_TGZ"
    )
