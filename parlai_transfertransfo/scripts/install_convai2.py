"""`parlai install_convai2`: install ConvAI2 from local files, for machines that cannot
reach ParlAI's download servers.

    parlai install_convai2 --source convai2_fix_723.tgz [--datapath DIR] [--strict]
    parlai install_convai2 --source DIR_WITH_TXT_FILES --force
    parlai display_data -t convai2:both -dt valid     # no download, no further flags

Files are found by name anywhere in the directory or archive (`train_self_original.txt`,
`valid_both_original_no_cands.txt`, ...), checked line by line, compared with the official
release where its checksums are known (a warning, or an error with `--strict`), and
installed into `{datapath}/ConvAI2/`, marked built as ParlAI's own convai2 build marks it.
A failed install leaves the datapath as it was.
"""
from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_transfertransfo.data import convai2


def setup_args(parser=None):
    if parser is None:
        parser = ParlaiParser(True, False, "Install ConvAI2 from a local directory or .tgz")
    group = parser.add_argument_group("install_convai2")
    group.add_argument(
        "--source",
        type=str,
        default=None,
        help="a directory or .tgz (e.g. convai2_fix_723.tgz) holding ConvAI2 files in ParlAI's text format",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="stop, installing nothing, if a known official file differs from the release",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="replace an existing {datapath}/ConvAI2",
    )
    return parser


@register_script("install_convai2", hidden=False)
class InstallConvai2(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self):
        if not self.opt.get("source"):
            from parlai_transfertransfo.errors import TransfertransfoError

            raise TransfertransfoError("install_convai2 needs --source DIR_OR_TGZ")
        return convai2.install(
            self.opt["source"],
            self.opt["datapath"],
            strict=self.opt["strict"],
            force=self.opt["force"],
        )


if __name__ == "__main__":
    InstallConvai2.main()
