"""Patches `parlai.core.agents`; the breakage is named in each docstring."""

import os


def fix_missing_model_file_message(agents):
    """`parlai eval_model` / `interactive` with a `--model-file` that does not exist end
    in a RuntimeError traceback ("WARNING: Model file does not exist"): say it in one
    line instead."""
    create_agent = agents.create_agent

    def create_agent_checked(opt, requireModelExists=False):
        try:
            return create_agent(opt, requireModelExists)
        except RuntimeError as err:
            if "Model file does not exist" not in str(err):
                raise
            raise SystemExit(
                f"parlai: the model file {opt.get('model_file')} does not exist: check "
                "--model-file (zoo models are named like zoo:transfertransfo/<entry>/model)"
            ) from None

    agents.create_agent = create_agent_checked


def model_files_that_name_no_agent(agents):
    """A `.opt` without a `model` key (a hand-edited or foreign file) ends in
    `KeyError: 'model'` inside `create_agent_from_opt_file`: say so in one line. Also
    applies `fix_missing_model_file_message`, the other patch of this module."""
    from parlai_transfertransfo.errors import TransfertransfoError

    fix_missing_model_file_message(agents)
    from_opt_file = agents.create_agent_from_opt_file

    def create_agent_from_opt_file(opt):
        optfile = opt["model_file"] + ".opt"
        if os.path.isfile(optfile) and "model" not in agents.Opt.load(optfile) and not opt.get("model"):
            raise TransfertransfoError(f"{optfile} names no agent (no 'model' key): pass -m transfertransfo")
        return from_opt_file(opt)

    agents.create_agent_from_opt_file = create_agent_from_opt_file
