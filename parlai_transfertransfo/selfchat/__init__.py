"""`parlai self_chat -t convai2` for any model, offline, batched: the logs ACUTE-Eval reads.

- `personas`: the convai2 worlds' personas from the installed ConvAI2 training file, or
  from the packaged PERSONA-CHAT training personas when it is absent;
- `batch_world`: many self-chats advanced together, one `batch_act` per speaker and turn;
- `script`: `parlai self_chat` itself (checked options, a partner model, `-bs N`).

`plugin/compat/` wires them into ParlAI's `parlai.tasks.convai2.worlds` and
`parlai.scripts.self_chat`.

An app: may import the agent, weights, data and the recipe. Never the plugin.
"""
