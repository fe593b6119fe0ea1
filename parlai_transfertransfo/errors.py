"""The one exception users see.

It subclasses SystemExit so that ParlAI's command line prints its one-line message and
exits with status 1 instead of a traceback; code and tests can still catch it.
"""


class TransfertransfoError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"transfertransfo: {message}")
        self.message = message

    def __str__(self):
        return self.message
