"""The data side: checked readers for the formats our users bring, ConvAI2 installation
from local files, and the persona source for interactive chat.

Every reader here fails with one `TransfertransfoError` naming the file and line (or JSON
path) and what is wrong, instead of a traceback from deep inside a ParlAI teacher.

May import: `parlai_transfertransfo.errors` and ParlAI. Never the agent or the apps: the
agent (its default persona) and ParlAI's teachers (tasks/) read from here.
"""
