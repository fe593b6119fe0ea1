"""`-t convai2_file`: any ConvAI2-format text file given by path, every line checked,
served exactly as `-t convai2` serves its files.

    parlai display_data -t convai2_file --convai2-file valid_self_original.txt \\
        --valid-split 0.125 -dt train      # the first 7/8 of the dialogs
    ... -dt valid                          # the last 1/8 (test: the same)

The split is by dialog, never by line, and deterministic: the last dialogs of the file
are held out, so a model never sees part of a validation dialog while training.
"""
import copy
from typing import Optional

from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser
from parlai.core.teachers import DialogTeacher
from parlai.utils.data import DatatypeHelper

from parlai_transfertransfo.data import fbdialog
from parlai_transfertransfo.errors import TransfertransfoError


class Convai2FileTeacher(DialogTeacher):
    @classmethod
    def add_cmdline_args(cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt)
        group = parser.add_argument_group("convai2_file teacher")
        group.add_argument("--convai2-file", type=str, default=None, help="a ConvAI2-format text file")
        group.add_argument(
            "--valid-split",
            type=float,
            default=0,
            help="hold out the file's last dialogs for valid and test: a fraction (< 1) or a "
            "number of dialogs; 0 serves the whole file to every datatype",
        )
        group.add_argument(
            "--require-candidates",
            type="bool",
            default=True,
            help="every utterance line must carry label candidates (false for *_no_cands files)",
        )
        return parser

    def __init__(self, opt, shared=None):
        opt = copy.deepcopy(opt)
        if not opt.get("convai2_file"):
            raise TransfertransfoError("-t convai2_file needs --convai2-file PATH")
        opt["datafile"] = opt["convai2_file"]
        self.fold = DatatypeHelper.fold(opt["datatype"])
        self.id = "convai2_file"
        super().__init__(opt, shared)

    def setup_data(self, path):
        dialogs = fbdialog.read_dialogs(path, require_candidates=self.opt["require_candidates"])
        part = fbdialog.split_dialogs(dialogs, self.opt["valid_split"], self.fold)
        yield from fbdialog.episodes(part)


class DefaultTeacher(Convai2FileTeacher):
    pass
