"""ConvAI2's official evaluation dictionary: the words its word-level perplexity is over.

ParlAI's `projects/convai2/build_dict.py` built it with ParlAI's own `DictionaryAgent`
(`split` tokenizer, lowercased) on the `convai2:self` task's train and valid sets: 19,304
tokens. The dictionary reads each message's `text` and `labels` (`--dict-textfields`), so
the valid set's replies, which ParlAI's teachers serve as `eval_labels`, are not in it:
only their partner utterances and personas are. Built here the same way, through ParlAI's
teachers and `DictionaryAgent.act`, from whatever the datapath holds: train and valid when
the train split is installed (`parlai install_convai2`), else valid alone, and `source`
says which.
"""
import copy

from parlai.core.dict import DictionaryAgent
from parlai.core.opt import Opt

from parlai_transfertransfo.errors import TransfertransfoError

OFFICIAL_TASK = "convai2:self"
OFFICIAL_TOKENS = 19304  # the official dictionary's size, its 4 special tokens included
TRAIN_AND_VALID, VALID_ONLY = "train+valid", "valid"
INSTALL_HINT = "install ConvAI2 with: parlai install_convai2 --source DIR_OR_TGZ"


def new_dictionary():
    """An empty dictionary as the official one is configured (split tokenizer, lowercased)."""
    return DictionaryAgent(Opt({"dict_tokenizer": "split", "dict_lower": True, "dict_textfields": "text,labels",
                                "dict_minfreq": 0, "dict_maxtokens": -1}))


def offered_words(dictionary):
    """The words a next-word distribution covers: every token but null/start/end/unk (the
    official dictionary's frequency-1e9 special tokens)."""
    special = {dictionary.null_token, dictionary.start_token, dictionary.end_token, dictionary.unk_token}
    return [w for w in dictionary.keys() if w not in special]


def teacher(opt, task, datatype):
    """A ParlAI teacher of `task` on `datatype`, from `opt` (datapath, task options)."""
    from parlai.core.teachers import create_task_agent_from_taskname

    topt = copy.deepcopy(opt)
    topt.update({"task": task, "datatype": datatype, "batchsize": 1, "hide_labels": False})
    topt.pop("pytorch_teacher_task", None)
    return create_task_agent_from_taskname(Opt(topt))[0]


def _add_fold(dictionary, teacher):
    n = teacher.num_examples()
    for _ in range(n):
        dictionary.observe(teacher.act())
        dictionary.act()
    return n


def build(opt, task=OFFICIAL_TASK, say=print):
    """(dictionary, source, examples read): the official dictionary built from `task`'s
    train and valid sets in `opt`'s datapath, or from valid alone when there is no train
    split (one line says so). Fails in one line, naming `parlai install_convai2`, when there
    is neither, or when they hold no words."""
    dictionary, source, read = new_dictionary(), TRAIN_AND_VALID, 0
    try:  # valid first: without it there is nothing to build from (and one download try)
        valid = teacher(opt, task, "valid")
    except (TransfertransfoError, FileNotFoundError) as err:
        raise TransfertransfoError(f"the official dictionary needs {task}'s valid set, which is missing "
                                   f"({_reason(err)}); {INSTALL_HINT}")
    try:
        train = teacher(opt, task, "train:ordered")
    except (TransfertransfoError, FileNotFoundError) as err:
        train, source = None, VALID_ONLY
        say(f"official dictionary: no train split for {task} ({_reason(err)}), so it is built from the valid "
            "set alone (the official one, 19,304 tokens, also reads train)")
    if train is not None:  # train, then valid, as ParlAI's build_dict reads them
        read += _add_fold(dictionary, train)
    read += _add_fold(dictionary, valid)
    if not offered_words(dictionary):
        raise TransfertransfoError(f"the official dictionary is empty: {task} ({source}) has no words; "
                                   f"{INSTALL_HINT}")
    return dictionary, source, read


def _reason(err):
    """The first clause of an error's message (ours end with their own install hint)."""
    return (getattr(err, "message", None) or str(err)).split(";")[0]
