"""`-tblog true` with train_model and eval_model: the event files TensorBoard reads hold
hits@1, ppl and wppl; a log directory that cannot be written is one line.

ParlAI's logger writes `hits@1` as the tag `hits_1` (TensorBoard tags allow no `@`)."""
import os

import pytest

from conftest import run_parlai
from benchmarks.kill_resume import first_dialogs
from test_cli_agent import reports


def scalars(logdir):
    """tag -> [values] of every event file under logdir, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for root, _dirs, files in os.walk(logdir):
        if any(f.startswith("events.out.tfevents") for f in files):
            events = EventAccumulator(root)
            events.Reload()
            for tag in events.Tags()["scalars"]:
                found.setdefault(tag, []).extend(e.value for e in events.Scalars(tag))
    return found


@pytest.fixture(scope="module")
def trained_with_tblog(tmp_path_factory, tiny_llama_dir):
    out = tmp_path_factory.mktemp("tblog")
    dialogs = first_dialogs(3, out / "three.txt")
    rc, output = run_parlai(
        "train_model", "-m", "transfertransfo", "--model-name", tiny_llama_dir, "-t", "convai2_file",
        "--convai2-file", dialogs, "--valid-split", 1, "-mf", out / "model", "--datapath", out / "data",
        "-bs", 4, "--num-epochs", 1, "-lr", 1e-3, "--skip-generation", "true", "-tblog", "true",
        "--validation-every-n-steps", 2, "--validation-metric", "hits@1",
    )
    assert rc == 0, output[-3000:]
    return str(out / "model"), dialogs, out, output


def test_train_model_logs_training_and_validation_metrics(trained_with_tblog):
    """Each validation's hits@1, ppl and wppl, as the printed reports give them."""
    model_file, _, _, output = trained_with_tblog
    found = scalars(model_file + ".tensorboard")  # ParlAI's default --tensorboard-logdir
    for tag in ("hits_1/valid", "ppl/valid", "wppl/valid", "ppl/train", "wppl/train"):
        assert found.get(tag), (tag, sorted(found))
    printed = [r for r in reports(output) if "hits@1" in r and "wppl" in r]
    for tag, metric in (("hits_1/valid", "hits@1"), ("ppl/valid", "ppl"), ("wppl/valid", "wppl")):
        values = [r[metric] for r in printed]
        for logged in found[tag]:  # the reports print 4 significant digits
            assert any(logged == pytest.approx(v, rel=1e-3) for v in values), (tag, logged, values)
    assert found["wppl/valid"][-1] > found["ppl/valid"][-1]


def test_eval_model_logs_its_report(trained_with_tblog):
    model_file, dialogs, out, _ = trained_with_tblog
    rc, output = run_parlai(
        "eval_model", "-mf", model_file, "-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 1,
        "-dt", "valid", "--datapath", out / "data", "--skip-generation", "true", "-bs", 4,
        "-tblog", "true", "-tblogdir", out / "eval_tb",
    )
    assert rc == 0, output[-3000:]
    found = scalars(out / "eval_tb")
    final = reports(output)[-1]
    for tag, metric in (("hits_1/valid", "hits@1"), ("ppl/valid", "ppl"), ("wppl/valid", "wppl")):
        assert len(found.get(tag, [])) == 1, (tag, sorted(found))
        assert found[tag][0] == pytest.approx(final[metric], rel=1e-3), tag  # reports: 4 digits


def test_an_unwritable_log_directory_is_one_line(trained_with_tblog):
    model_file, dialogs, out, _ = trained_with_tblog
    (out / "a_file").write_text("not a directory\n")
    rc, output = run_parlai(
        "eval_model", "-mf", model_file, "-t", "convai2_file", "--convai2-file", dialogs, "--valid-split", 1,
        "-dt", "valid", "--datapath", out / "data", "--skip-generation", "true", "-tblog", "true",
        "-tblogdir", out / "a_file" / "tb",
    )
    assert rc == 1 and "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"parlai: cannot write TensorBoard logs to {out / 'a_file' / 'tb'} (") and "--tensorboard-logdir" in last
