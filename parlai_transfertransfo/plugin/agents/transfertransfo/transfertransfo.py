"""`-m transfertransfo`: ParlAI imports parlai.agents.transfertransfo.transfertransfo."""
try:
    from parlai_transfertransfo.agent.transfertransfo import TransfertransfoAgent  # noqa: F401
except ImportError as err:  # a half-installed environment, not a bug to trace
    from parlai_transfertransfo.errors import TransfertransfoError

    raise TransfertransfoError(
        f"cannot load the transfertransfo agent ({err}); the environment is incomplete: "
        "run ./install.sh (or pip install -e . in your environment)"
    ) from None
