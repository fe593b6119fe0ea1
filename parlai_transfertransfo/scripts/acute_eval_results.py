"""`parlai acute_eval_results`: the win rates of an ACUTE-Eval run.

    parlai acute_eval_results --results-folder ~/data/mephisto/acute_eval [--output-folder OUT]

Reads the judgments.jsonl the launcher (python -m parlai_transfertransfo.crowdsourcing.acute_eval)
wrote; prints the Markdown table and writes results.md, results.csv, win_rates.png and reasons.csv.
"""
from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_transfertransfo.errors import TransfertransfoError


def setup_args(parser=None):
    if parser is None:
        parser = ParlaiParser(False, False, "Compile the win rates of an ACUTE-Eval run")
    group = parser.add_argument_group("acute_eval_results")
    group.add_argument("--results-folder", type=str, default=None,
                       help="the launch's results folder, or its judgments.jsonl")
    group.add_argument("--output-folder", type=str, default=None,
                       help="where results.md, results.csv, win_rates.png and reasons.csv go (default: the results folder)")
    return parser


@register_script("acute_eval_results", hidden=False)
class AcuteEvalResults(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self):
        import os

        from parlai_transfertransfo.crowdsourcing.acute_eval.analysis import compile_results

        folder = self.opt.get("results_folder")
        if not folder:
            raise TransfertransfoError("acute_eval_results needs --results-folder DIR")
        out = self.opt.get("output_folder") or (folder if os.path.isdir(folder) else os.path.dirname(folder) or ".")
        text = compile_results(folder, out)
        print(text)
        print(f"wrote {os.path.join(out, 'results.md')}, results.csv, win_rates.png and reasons.csv")
        return text


if __name__ == "__main__":
    AcuteEvalResults.main()
