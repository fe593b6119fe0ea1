from parlai_transfertransfo.crowdsourcing.model_chat.run import run

run()
