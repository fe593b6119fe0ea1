"""Installing ConvAI2 from local files, so that ParlAI's own `-t convai2[:variant]` runs
with no download.

ParlAI's `parlai/tasks/convai2/build.py` downloads `convai2_fix_723.tgz` into
`{datapath}/ConvAI2/`, unpacks it there and marks the folder built with version `v5.0`;
its teachers then read `{datapath}/ConvAI2/{train,valid}_{persona}[_no_cands].txt`.
`install()` produces the same folder from a directory or a `.tgz`: every file is checked
line by line, known official files are compared with the release's sizes and MD5s, and the
folder appears in one rename, or not at all.
"""
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass

from parlai_transfertransfo.data import fbdialog
from parlai_transfertransfo.errors import TransfertransfoError

VERSION = "v5.0"  # the version string of parlai/tasks/convai2/build.py
FOLDER = "ConvAI2"
ARCHIVE = "convai2_fix_723.tgz"

# name -> (bytes, MD5 or a prefix of it), from the convai2_fix_723.tgz release
OFFICIAL_FILES = {
    "valid_self_original.txt": (9100907, "9ffb860096ebdcdc311649c8248c3b1c"),
    "valid_self_original_no_cands.txt": (1042927, "d27c8cac40fc7c937fab999993ef2a9b"),
    "valid_none_original.txt": (8878395, "d4853f4712db1298cc5204c79550a4f7"),
    "valid_both_original.txt": (9346213, "b3471427"),
    "train_self_original.txt": (149722362, "38ea3b2dd1693f46a7e69894088c0c10"),
    "train_both_original.txt": (153950608, "97d6289d95d8afba87c3c848a65937f8"),
    ARCHIVE: (429780162, "45d6a56b655a18ed4223499173e04934"),
}

FILE_NAME = re.compile(r"^(train|valid|test)_(self|other|both|none)_(original|revised)(_no_cands)?\.txt$")

# the teachers of parlai/tasks/convai2/agents.py -> the persona part of the file they read
VARIANTS = [  # (task names, persona part of the file name, the task name with no candidates)
    ("convai2, convai2:self_original, convai2:normalized", "self_original", "convai2:self_original:no_cands"),
    ("convai2:both, convai2:normalized_both, convai2:normalized_their", "both_original", "convai2:both:no_cands"),
    ("convai2:none, convai2:normalized_none", "none_original", "convai2:none:no_cands"),
    ("convai2:self_revised", "self_revised", "convai2:self_revised:no_cands"),
]


@dataclass
class Check:
    name: str
    status: str  # "ok", "mismatch" or "unknown" (no official checksum for this name)
    detail: str = ""


def md5sum(path):
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security (FIPS builds)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path, name=None, table=OFFICIAL_FILES) -> Check:
    """Compare a file with the official release by size, then MD5."""
    name = name or os.path.basename(path)
    if name not in table:
        return Check(name, "unknown", "no official checksum for this name")
    size, md5 = table[name]
    actual = os.path.getsize(path)
    if actual != size:
        return Check(name, "mismatch", f"{actual} bytes, the official file has {size}")
    digest = md5sum(path)
    if not digest.startswith(md5):
        return Check(name, "mismatch", f"MD5 {digest}, the official file has {md5}")
    return Check(name, "ok", f"{size} bytes, MD5 {digest}")


def _collect_dir(source, staging, say):
    found = {}
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for fname in sorted(files):
            _take(found, fname, os.path.join(root, fname), say)
    for name, path in found.items():
        shutil.copyfile(path, os.path.join(staging, name))
    return found


def _collect_tgz(source, staging, say):
    found = {}
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                if member.isfile() and _take(found, os.path.basename(member.name), member.name, say):
                    # copied by name, never extracted by path: no member escapes staging
                    with tar.extractfile(member) as src, open(os.path.join(staging, os.path.basename(member.name)), "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        raise TransfertransfoError(f"{source}: not a readable .tgz archive ({err})")
    return {name: f"{source}[{member}]" for name, member in found.items()}


def _take(found, fname, where, say):
    if fname.startswith("._") or not fname.endswith(".txt"):
        return False
    if not FILE_NAME.match(fname):
        say(f"  ignored {where}: not a ConvAI2 file name (e.g. valid_self_original.txt)")
        return False
    if fname in found:
        raise TransfertransfoError(f"two files named {fname}: {found[fname]} and {where}")
    found[fname] = where
    return True


def _first_missing_ancestor(path):
    path = os.path.abspath(path)
    missing = None
    while not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def install(source, datapath, strict=False, force=False, say=print, table=OFFICIAL_FILES):
    """Install the ConvAI2 files found in `source` (a directory or a .tgz) as
    `{datapath}/ConvAI2`, built as ParlAI's convai2 build marks it; returns their names."""
    import parlai.core.build_data as build_data

    target = os.path.join(datapath, FOLDER)
    if not os.path.exists(source):
        raise TransfertransfoError(f"--source {source}: no such file or directory")
    is_dir = os.path.isdir(source)
    if not is_dir and not tarfile.is_tarfile(source):
        raise TransfertransfoError(f"--source {source}: neither a directory nor a .tgz archive")
    # a folder that is not marked built is what a failed ParlAI download leaves: replace it
    if build_data.built(target) and not force:
        raise TransfertransfoError(f"{target} already exists; --force replaces it")
    mismatches = []

    def check(path, name):
        result = verify(path, name, table)
        if result.status == "mismatch":
            message = f"{name} is not the official {ARCHIVE} file: {result.detail}"
            if strict:
                raise TransfertransfoError(f"{message} (--strict)")
            mismatches.append(name)
            say(f"WARNING: {message}")
        return result

    if not is_dir:
        check(source, os.path.basename(source))
    created = _first_missing_ancestor(datapath)
    os.makedirs(datapath, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{FOLDER}.installing.", dir=datapath)
    backup = None
    try:
        say(f"reading {source}")
        origins = (_collect_dir if is_dir else _collect_tgz)(source, staging, say)
        names = sorted(origins)
        if not names:
            raise TransfertransfoError(
                f"{source}: no ConvAI2 files (names like valid_self_original.txt, train_both_original_no_cands.txt)"
            )
        for name in names:
            path = os.path.join(staging, name)
            result = check(path, name)
            n_dialogs = n_examples = 0
            try:
                for dialog in fbdialog.iter_dialogs(path, require_candidates="_no_cands" not in name):
                    n_dialogs += 1
                    n_examples += len(dialog.turns)
            except TransfertransfoError as err:  # name the user's file, not our staged copy
                raise TransfertransfoError(err.message.replace(path, origins[name], 1))
            say(f"  {name}: {n_dialogs} dialogs, {n_examples} examples; checksum {result.status}")
        build_data.mark_done(staging, VERSION)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        if os.path.exists(target):
            backup = tempfile.mkdtemp(prefix=f".{FOLDER}.replaced.", dir=datapath)
            os.rmdir(backup)
            os.rename(target, backup)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if backup and not os.path.exists(target):
            os.rename(backup, target)
        if created:
            shutil.rmtree(created, ignore_errors=True)
        raise
    if backup:
        shutil.rmtree(backup, ignore_errors=True)
    say(f"installed {len(names)} file(s) into {target} (marked built, version {VERSION})")
    if mismatches:
        say(f"WARNING: {len(mismatches)} file(s) differ from the official release: {', '.join(mismatches)}")
    for line in available_variants(names):
        say(line)
    return names


def available_variants(names):
    """Lines telling which `-t convai2...` tasks the installed files serve, and which not."""
    names = set(names)
    served, partial, absent = [], [], []
    for tasks, persona, no_cands_task in VARIANTS:
        for suffix, label in (("", tasks), ("_no_cands", no_cands_task)):
            files = {fold: f"{fold}_{persona}{suffix}.txt" for fold in ("train", "valid")}
            have = [fold for fold, name in files.items() if name in names]
            if have:
                folds = have + (["test"] if "valid" in have else [])
                served.append(f"  -t {label}: {', '.join(folds)}")
                partial += [name for name in files.values() if name not in names]
            else:
                absent.append(label.split(", ")[0])
    lines = ["ParlAI's convai2 teachers can now read (test reads the valid file):"]
    lines += served or ["  nothing: no train_*/valid_* file that they read"]
    if partial:
        lines.append(f"missing, so those folds stop with an error: {', '.join(partial)}")
    if absent:
        lines.append(f"not installed: {', '.join(absent)}")
    return lines


def guard_convai2_teachers(agents):
    """For `compat.PATCHES["parlai.tasks.convai2.agents"]`: when ConvAI2 cannot be
    downloaded or an installed folder lacks the file a variant reads, stop with one line
    that names the file and the install command, not ParlAI's retries and traceback."""
    import parlai.core.build_data as build_data

    if hasattr(agents._path, "parlai_path"):
        return  # already guarded
    parlai_path = agents._path

    def _path(opt, persona, use_cands):
        dpath = os.path.join(opt["datapath"], FOLDER)
        if not build_data.built(dpath, VERSION):
            try:
                parlai_path(opt, persona, use_cands)
            except Exception as err:
                raise TransfertransfoError(
                    f"ConvAI2 is not installed in {dpath} and could not be downloaded ({err}); "
                    f"install local files with: parlai install_convai2 --source DIR_OR_TGZ"
                )
        path = parlai_path(opt, persona, use_cands)
        if not os.path.isfile(path):
            have = sorted(n for n in os.listdir(dpath) if FILE_NAME.match(n))
            raise TransfertransfoError(
                f"{path} is not installed (this ConvAI2 install has {', '.join(have) or 'no files'}); "
                f"add it with: parlai install_convai2 --source DIR_OR_TGZ --force"
            )
        return path

    _path.parlai_path = parlai_path
    agents._path = _path
