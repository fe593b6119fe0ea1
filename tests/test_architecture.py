"""The package's shape (docs/architecture.md): layers whose imports point one way, no import
circle, no source file over 400 lines, the 0.1 module names still importable (with a
warning), and every relative link in the docs resolving."""
import ast
import importlib
import json
import os
import re
import subprocess
import sys
import warnings

import pytest

from parlai_transfertransfo import moved

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "parlai_transfertransfo"
# folders that are packages of ours under another name (setup.py's package_dir)
MAPPED = {"zoo": f"{PACKAGE}.zoo", "tasks": f"{PACKAGE}.tasks"}
APPS = ("serving", "selfchat", "crowdsourcing", "scripts", "tools", "distributed", "zoo", "tasks")
# layer -> the layers its modules may import (its own included); `errors` is everyone's
MAY_IMPORT = {
    "recipe": {"recipe"},
    "weights": {"weights", "recipe"},
    "data": {"data"},
    "agent": {"agent", "weights", "data", "recipe"},
    "apps": {"apps", "agent", "weights", "data", "recipe"},
    "plugin": {"plugin", "apps", "agent", "weights", "data", "recipe"},
}
# third-party packages a layer must never import
NEVER = {
    "recipe": ("parlai", "mephisto", "fastapi", "starlette", "uvicorn", "peft"),
    "weights": ("mephisto", "fastapi", "starlette", "uvicorn"),
    "data": ("torch", "transformers", "mephisto", "fastapi"),
    "agent": ("mephisto", "fastapi", "starlette", "uvicorn"),
}


def source_files():
    """(module name, path) of every Python file of the package, zoo/ and tasks/ included."""
    out = []
    for folder, module in [(PACKAGE, PACKAGE), *MAPPED.items()]:
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in ("node_modules", "__pycache__")]
            for name in filenames:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, name), base)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    out.append((".".join([module, *rel]), os.path.join(dirpath, name)))
    return sorted(out)


MODULES = dict(source_files())


def layer_of(module):
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("errors", "moved"):
        return "base"
    return "apps" if parts[1] in APPS else parts[1]


def imports_of(path):
    """Every module of ours and every top-level third-party package `path` imports,
    at the top or inside a function."""
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from package import module` imports the module; `from module import name`, the module
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == PACKAGE:
                while name not in MODULES and "." in name:
                    name = name.rsplit(".", 1)[0]
                ours.add(name)
            else:
                theirs.add(name.split(".")[0])
    return ours, theirs


GRAPH = {module: imports_of(path) for module, path in MODULES.items()}


def test_the_layers_are_the_folders_the_docs_name():
    layers = {layer_of(m) for m in MODULES}
    assert layers == {"base", "recipe", "weights", "data", "agent", "apps", "plugin"}
    flat = sorted(m for m in MODULES if m.count(".") == 1 and not m.startswith(tuple(f"{PACKAGE}.{a}" for a in APPS)))
    assert flat == [f"{PACKAGE}.{n}" for n in ("agent", "data", "errors", "moved", "plugin", "recipe", "weights")]


def test_imports_point_down_only():
    wrong = []
    for module, (ours, theirs) in GRAPH.items():
        layer = layer_of(module)
        for target in ours:
            to = layer_of(target)
            if to == "base" or layer in ("base",) and module.endswith("moved"):
                continue
            if layer == "base" or to not in MAY_IMPORT[layer]:
                wrong.append(f"{module} ({layer}) imports {target} ({to})")
        for name in NEVER.get(layer, ()):
            if name in theirs:
                wrong.append(f"{module} ({layer}) imports {name}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_rule_catches_an_import_that_goes_up(tmp_path):
    """The check above can fail: a recipe module importing the agent or ParlAI is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from parlai_transfertransfo.agent import losses\nimport parlai.core.opt\n")
    ours, theirs = imports_of(str(bad))
    assert ours == {f"{PACKAGE}.agent.losses"} and "parlai" in theirs
    assert "agent" not in MAY_IMPORT["recipe"] and "parlai" in NEVER["recipe"]


def find_cycle(graph):
    """One import circle of `graph` (module -> modules), as a list, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle():
    graph = {m: {t for t in ours if t != m} for m, (ours, _) in GRAPH.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # it can fail


def test_no_source_file_over_400_lines():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    long = []
    for path in tracked:
        if os.path.exists(os.path.join(ROOT, path)) and path.split("/")[0] in (PACKAGE, "zoo", "tasks", "tests", "benchmarks") and path.endswith(
            (".py", ".js", ".jsx", ".mjs", ".sh", ".css", ".html")
        ):
            n = sum(1 for _ in open(os.path.join(ROOT, path), encoding="utf-8"))
            if n > 400:
                long.append(f"{path}: {n}")
    assert len(tracked) > 100 and not long, long


def test_the_old_module_names_still_import_with_a_warning():
    """Each 0.1 name, imported fresh, warns once naming its new home and answers every
    public name of it."""
    code = (
        "import importlib, json, warnings\n"
        "from parlai_transfertransfo import moved\n"
        "out = {}\n"
        "for old in sorted(moved.MOVED):\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module('parlai_transfertransfo.' + old)\n"
        "    out[old] = [[str(w.message) for w in caught if w.category is DeprecationWarning\n"
        "                 and 'moved to' in str(w.message)], sorted(n for n in dir(module) if not n.startswith('__'))]\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.splitlines()[-1])
    assert sorted(result) == sorted(moved.MOVED)
    for old, new in moved.MOVED.items():
        messages, names = result[old]
        assert len(messages) == 1 and f"{PACKAGE}.{new[0]}" in messages[0], (old, messages)
        for target in new:  # every public name of the new homes answers under the old name
            public = {n for n in dir(importlib.import_module(f"{PACKAGE}.{target}")) if not n.startswith("__")}
            assert public <= set(names), (old, target, public - set(names))


def test_names_that_readers_and_users_use_resolve_to_the_new_objects():
    from parlai_transfertransfo.agent.transfertransfo import TransfertransfoAgent
    from parlai_transfertransfo.recipe.double_heads import DoubleHeads
    from parlai_transfertransfo.recipe.prefix import Prefix, left_pad
    from parlai_transfertransfo.weights.model_files import export_pretrained, write_model_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from parlai_transfertransfo import agents, convert, modeling

    assert modeling.DoubleHeads is DoubleHeads and modeling.Prefix is Prefix and modeling.left_pad is left_pad
    assert agents.TransfertransfoAgent is TransfertransfoAgent
    assert convert.export_pretrained is export_pretrained and convert._write_model_file is write_model_file
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        convert.nothing_here


# ---- the docs ---------------------------------------------------------------------------------
DOCS = ["README.md", *sorted(f"docs/{n}" for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md")),
        "zoo/transfertransfo/README.md", "tests/data/README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def test_every_relative_link_in_the_docs_resolves():
    broken, seen = [], 0
    for doc in DOCS:
        path = os.path.join(ROOT, doc)
        text = re.sub(r"```.*?```", "", open(path, encoding="utf-8").read(), flags=re.S)
        for groups in LINK.findall(text):
            link = groups[0] or groups[1]
            if re.match(r"^[a-z]+:", link):
                continue
            seen += 1
            target, _, anchor = link.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
            if not os.path.exists(resolved):
                broken.append(f"{doc}: {link} (no {os.path.relpath(resolved, ROOT)})")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                broken.append(f"{doc}: {link} (no heading #{anchor})")
    assert seen > 20 and not broken, "\n".join(broken)


def test_the_readme_is_a_front_door():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert len(readme.splitlines()) <= 300
    for doc in ("install", "training", "evaluation", "serving", "human-evaluation", "benchmarks",
                "architecture", "trust"):
        assert f"docs/{doc}.md" in readme, doc
