"""`parlai export_transfertransfo`: a fine-tuned model file as a `save_pretrained` folder.

    parlai export_transfertransfo -mf DIR/model --out EXPORT
    python -c "from transformers import GPT2DoubleHeadsModel as M; M.from_pretrained('EXPORT')"

GPT and GPT-2 exports load with their *DoubleHeadsModel (LM and MC heads); Llama-family
exports load with AutoModelForCausalLM, the MC head beside them in mc_head.safetensors.
Every export also works as `--model-name EXPORT` for further fine-tuning.

    parlai export_transfertransfo -mf DIR/model --out ADAPTER --adapter true

writes a model trained with --lora-rank as its PEFT adapter folder instead (LoRA, the
special tokens' rows, the MC head, the tokenizer), for `PeftModel.from_pretrained`.
"""
from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript, register_script

from parlai_transfertransfo.errors import TransfertransfoError


def setup_args(parser=None):
    if parser is None:
        parser = ParlaiParser(True, False, "Export a transfertransfo model file for transformers")
    group = parser.add_argument_group("export_transfertransfo")
    group.add_argument("-mf", "--model-file", type=str, default=None,
                       help="the transfertransfo model file (zoo: paths work)")
    group.add_argument("--out", type=str, default=None, help="folder to write (created if missing)")
    from parlai_transfertransfo.weights.safe_load import add_cmdline_args

    add_cmdline_args(group)
    group.add_argument("--adapter", type="bool", default=False,
                       help="a --lora-rank model as its PEFT adapter folder, not merged weights")
    return parser


@register_script("export_transfertransfo", hidden=False)
class ExportTransfertransfo(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self):
        from parlai.core.build_data import modelzoo_path

        from parlai_transfertransfo.weights.model_files import export_pretrained

        if not self.opt.get("model_file") or not self.opt.get("out"):
            raise TransfertransfoError("export_transfertransfo needs -mf MODEL_FILE and --out DIR")
        model_file = modelzoo_path(self.opt.get("datapath"), self.opt["model_file"])
        from parlai_transfertransfo.weights.safe_load import trusted

        files = export_pretrained(model_file, self.opt["out"], adapter=self.opt.get("adapter", False),
                                  trust=trusted(self.opt))
        print(f"exported {model_file} to {self.opt['out']}: {', '.join(files)}")
        return files


if __name__ == "__main__":
    ExportTransfertransfo.main()
