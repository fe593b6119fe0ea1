"""ACUTE-Eval of transfertransfo models' self-chats on Mephisto (`python -m
parlai_transfertransfo.crowdsourcing.acute_eval`), and its results (`parlai acute_eval_results`)."""
