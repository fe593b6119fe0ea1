"""`-t personachat_json`: the recipe's `personachat_self_original.json` as ParlAI messages
shaped exactly like `-t convai2`'s (persona lines in the first text, `labels` or
`eval_labels`, `label_candidates` with the gold reply last).

    parlai display_data -t personachat_json --personachat-json PATH -dt valid

Without `--personachat-json` the file is downloaded from the recipe's URL into the
datapath.  `train` reads the `train` key; `valid` and `test` read `valid` (there is no
test split, as in ConvAI2).
"""
import copy
from typing import Optional

from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser
from parlai.core.teachers import DialogTeacher
from parlai.utils.data import DatatypeHelper

from parlai_transfertransfo.data import personachat_json

from .build import build


class PersonachatJsonTeacher(DialogTeacher):
    @classmethod
    def add_cmdline_args(cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt)
        group = parser.add_argument_group("personachat_json teacher")
        group.add_argument(
            "--personachat-json",
            type=str,
            default=None,
            help="path of personachat_self_original.json (default: download it into the datapath)",
        )
        return parser

    def __init__(self, opt, shared=None):
        opt = copy.deepcopy(opt)
        fold = DatatypeHelper.fold(opt["datatype"])
        self.split = "train" if fold == "train" else "valid"
        if not shared:
            opt["datafile"] = build(opt)
        self.id = "personachat_json"
        super().__init__(opt, shared)

    def setup_data(self, path):
        yield from personachat_json.episodes(personachat_json.read_split(path, self.split))


class DefaultTeacher(PersonachatJsonTeacher):
    pass
