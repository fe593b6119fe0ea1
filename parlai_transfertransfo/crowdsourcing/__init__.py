"""Human evaluation of transfertransfo models with ParlAI's crowdsourcing on Mephisto.

The set-up every task here shares (built once, for live chats and ACUTE-Eval alike):
- `launch`: Hydra configs with ParlAI's override syntax (`compose`), preflight checks that
  fail in one line before anything starts (`prepare`: model files, provider credentials,
  free port, built pages; then the run's own database), and the Operator's lifecycle
  (`run`: until done, SIGINT/SIGTERM, or a test's stop event; the router always stopped);
- `environment`: one Mephisto data directory per evaluation (never `~/.mephisto`), and the
  clean-up of what an unclean stop left (orphaned node routers, stale `local_server_N`);
- `frontend`: the pages (`<task>/frontend/`, built by `npm ci` + `npm run build`) and
  Mephisto's node router, built at install time; `copy_prebuilt` for a TaskBuilder;
- `stats`: means and proportions with 95% CIs, significance tests, Markdown/CSV/PNG output.
The Mephisto and ParlAI-crowdsourcing fixes live in ../plugin/compat/ (mephisto_*.py and others).

Tasks: `model_chat/` (ConvAI2-style live chats:
`python -m parlai_transfertransfo.crowdsourcing.model_chat`, `parlai model_chat_results`);
`acute_eval/` (ACUTE-Eval of self-chats: `python -m
parlai_transfertransfo.crowdsourcing.acute_eval`, `parlai acute_eval_results`).

An app: may import the agent, weights, data, the recipe and self-chat. Never the plugin.
"""
