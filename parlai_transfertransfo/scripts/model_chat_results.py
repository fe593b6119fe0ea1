"""`parlai model_chat_results`: the table of a live-chat human evaluation.

    parlai model_chat_results --results-folder ~/data/mephisto/model_chat [--output-folder OUT]

Reads the conversations.jsonl files the launcher (python -m
parlai_transfertransfo.crowdsourcing.model_chat) wrote; prints the Markdown table and writes
results.md, results.csv and ratings.png.  Several folders (comma-separated) put models or
runs side by side; `--group-by folder` keeps runs of one model apart.
"""
from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_transfertransfo.errors import TransfertransfoError


def setup_args(parser=None):
    if parser is None:
        parser = ParlaiParser(False, False, "Compile the results of live-chat human evaluations")
    group = parser.add_argument_group("model_chat_results")
    group.add_argument("--results-folder", type=str, default=None,
                       help="folder(s) or conversations.jsonl file(s), comma-separated")
    group.add_argument("--output-folder", type=str, default=None,
                       help="where results.md, results.csv and ratings.png go (default: the first results folder)")
    group.add_argument("--group-by", type=str, default="model", choices=["model", "folder"],
                       help="one row per model, or per model and results folder (runs side by side)")
    return parser


@register_script("model_chat_results", hidden=False)
class ModelChatResults(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self):
        import os

        from parlai_transfertransfo.crowdsourcing.model_chat.results import compile_results

        if not self.opt.get("results_folder"):
            raise TransfertransfoError("model_chat_results needs --results-folder DIR")
        paths = [p for p in self.opt["results_folder"].split(",") if p]
        out = self.opt.get("output_folder") or (paths[0] if os.path.isdir(paths[0]) else os.path.dirname(paths[0]) or ".")
        text = compile_results(paths, out, self.opt["group_by"])
        print(text)
        print(f"wrote {os.path.join(out, 'results.md')}, results.csv and ratings.png")
        return text


if __name__ == "__main__":
    ModelChatResults.main()
