"""`parlai convai2_official_eval`: ConvAI2's official hits@1, F1 and word-level perplexity,
as the 2018 leaderboard computed them, in one command.

    parlai convai2_official_eval -mf zoo:transfertransfo/smollm2_135m/model [--metric all|ppl|hits|f1] \\
        [--official-ppl prefix|exact] [--report-filename report.json] [-t convai2:self] [-dt valid]

Prints the official scripts' `FINAL ...` lines and a one-row Markdown table, and writes a
JSON report with --report-filename (tools/convai2_official.py). Every eval_model option
works (`-bs` for hits@1 and F1, `--inference greedy`, `--num-examples`, ...).
"""
from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script


def setup_args(parser=None):
    from parlai.scripts.eval_model import setup_args as eval_model_args

    if parser is None:
        parser = ParlaiParser(True, True, "ConvAI2's official evaluation: hits@1, F1 and word-level perplexity")
    parser = eval_model_args(parser)
    group = parser.add_argument_group("convai2_official_eval")
    group.add_argument("--metric", type=str, default="all",
                       help="all, or one of ppl (the official word-level perplexity), hits (hits@1), f1")
    parser.set_defaults(task="convai2:self", datatype="valid")
    return parser


@register_script("convai2_official_eval", hidden=False)
class Convai2OfficialEval(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self):
        from parlai_transfertransfo.tools.convai2_official import run

        return run(self.opt)


if __name__ == "__main__":
    Convai2OfficialEval.main()
