"""Helpers for the trust tests (safe loading, resume after SIGKILL, fuzzing): the tiny
models and data of benchmarks/kill_resume.py, and the real `parlai` command."""
import os
import subprocess
import sys

from benchmarks.kill_resume import first_dialogs, tiny_bpe_gpt2_dir, tiny_bpe_llama_dir  # noqa: F401

PARLAI = os.path.join(os.path.dirname(sys.executable), "parlai")


def run_parlai(*args, stdin=None, timeout=300, env=None):
    """The real `parlai` command; (exit status, stdout, stderr)."""
    proc = subprocess.run([PARLAI, *map(str, args)], input=stdin, capture_output=True,
                          timeout=timeout, env=env)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
