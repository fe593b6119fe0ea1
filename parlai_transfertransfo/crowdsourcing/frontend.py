"""The web pages and the node router of our crowdsourcing tasks, built at install time.

Mephisto runs `npm install` and webpack when a task launches (1-2 minutes, and network
access every time).  Here `./install.sh crowd` runs `python -m
parlai_transfertransfo.crowdsourcing.frontend` once, which for each task folder holding a
`frontend/package.json` runs `npm ci` from our committed lockfile and the folder's `npm run
build` (into `frontend/build/`), and assembles Mephisto's node router (its `server.js`,
from the installed Mephisto) with its npm dependencies from `router/package-lock.json`.
A launch then only copies files: nothing is downloaded or compiled.

Each build is stamped with a hash of its sources, so a stale bundle is caught
(`check_built()`, run by install.sh's check and by every launch's preflight).
"""
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTER_DIR = os.path.join(HERE, "router")
ROUTER_BUILD = os.path.join(ROUTER_DIR, "build")
STAMP = ".built-from"
_SKIP = {"node_modules", "build"}


class NotBuilt(RuntimeError):
    pass


def frontend_dirs():
    """Every task's frontend folder (crowdsourcing/<task>/frontend with a package.json)."""
    found = []
    for task in sorted(os.listdir(HERE)):
        path = os.path.join(HERE, task, "frontend")
        if os.path.isfile(os.path.join(path, "package.json")):
            found.append(path)
    return found


def _mephisto_router_source():
    from mephisto.abstractions.architects.router import build_router

    return build_router.NODE_SERVER_SOURCE_ROOT


def _sources_hash(folder, extra=()):
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP)
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def _router_hash():
    import mephisto

    lock = os.path.join(ROUTER_DIR, "package-lock.json")
    with open(lock, "rb") as f:
        return hashlib.sha1(f.read() + mephisto.__version__.encode()).hexdigest()[:16]


def _stamp_ok(build_dir, expected):
    try:
        with open(os.path.join(build_dir, STAMP)) as f:
            return f.read().strip() == expected
    except OSError:
        return False


def _npm(args, cwd):
    npm = shutil.which("npm")
    if npm is None:
        raise NotBuilt("npm is not installed: install Node.js 18+ (Debian: apt-get install nodejs npm)")
    run = subprocess.run([npm, *args, "--no-audit", "--no-fund"], cwd=cwd, capture_output=True, text=True)
    if run.returncode != 0:
        raise NotBuilt(f"`npm {' '.join(args)}` failed in {cwd}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")


def build_frontend(folder):
    """`npm ci` from the committed lockfile, then `npm run build` into folder/build."""
    _npm(["ci"], folder)
    shutil.rmtree(os.path.join(folder, "build"), ignore_errors=True)
    _npm(["run", "build"], folder)
    with open(os.path.join(folder, "build", STAMP), "w") as f:
        f.write(_sources_hash(folder))


def build_router():
    """Mephisto's node router (server.js, static/) with our locked npm dependencies."""
    shutil.rmtree(ROUTER_BUILD, ignore_errors=True)
    source = _mephisto_router_source()
    shutil.copytree(source, ROUTER_BUILD, ignore=shutil.ignore_patterns("node_modules", "package*.json"))
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(os.path.join(ROUTER_DIR, name), os.path.join(ROUTER_BUILD, name))
    _npm(["ci", "--omit=dev"], ROUTER_BUILD)
    with open(os.path.join(ROUTER_BUILD, STAMP), "w") as f:
        f.write(_router_hash())


def build_all(force=False):
    if force or not _stamp_ok(ROUTER_BUILD, _router_hash()):
        build_router()
    for folder in frontend_dirs():
        if force or not _stamp_ok(os.path.join(folder, "build"), _sources_hash(folder)):
            build_frontend(folder)


def check_built():
    """Raise NotBuilt (one line) unless the router and every frontend are built and current."""
    stale = []
    if not _stamp_ok(ROUTER_BUILD, _router_hash()):
        stale.append(os.path.relpath(ROUTER_BUILD, HERE))
    for folder in frontend_dirs():
        if not _stamp_ok(os.path.join(folder, "build"), _sources_hash(folder)):
            stale.append(os.path.relpath(os.path.join(folder, "build"), HERE))
    if stale:
        raise NotBuilt(
            f"the crowdsourcing pages are not built or out of date ({', '.join(stale)}): "
            "run ./install.sh crowd"
        )


def copy_prebuilt(frontend_dir, build_dir):
    """What a task builder does at launch: the built page into the router's static/."""
    static = os.path.join(build_dir, "static")
    os.makedirs(static, exist_ok=True)
    built = os.path.join(frontend_dir, "build")
    for name in os.listdir(built):
        if name != STAMP:
            shutil.copy2(os.path.join(built, name), os.path.join(static, name))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv == ["--check"]:
            check_built()
        else:
            build_all(force="--force" in argv)
            check_built()
    except NotBuilt as err:
        sys.exit(f"crowdsourcing frontend: {err}")
    print("crowdsourcing frontend: router and pages built" if argv != ["--check"] else "built")


if __name__ == "__main__":
    main()
