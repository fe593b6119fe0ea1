from parlai_transfertransfo.crowdsourcing.acute_eval.run import run

run()
