"""`zoo:transfertransfo/gpt_personachat/model`: Hugging Face's own TransferTransfo model.

The OpenAI GPT fine-tuned on PERSONA-CHAT that transfer-learning-conv-ai's `interact.py`
downloads (a transformers 2.x `save_pretrained` folder as a .tar.gz), converted once into a
ParlAI model file:

    parlai interactive -mf zoo:transfertransfo/gpt_personachat/model
    parlai eval_model -mf zoo:transfertransfo/gpt_personachat/model -t convai2

Offline, download the archive elsewhere and point the environment variable at it:

    TRANSFERTRANSFO_GPT_PERSONACHAT=/path/to/gpt_personachat_cache.tar.gz parlai interactive ...

The variable takes a URL or a local path (a .tar.gz or the folder it extracts to).
"""
import os

from parlai.core.build_data import built, make_dir, mark_done, remove_dir
from parlai.utils import logging

from parlai_transfertransfo.errors import TransfertransfoError

URL = (
    "https://s3.amazonaws.com/models.huggingface.co/transfer-learning-chatbot/"
    "gpt_personachat_cache.tar.gz"
)
SOURCE_ENV = "TRANSFERTRANSFO_GPT_PERSONACHAT"
ARCHIVE = "gpt_personachat_cache.tar.gz"
VERSION = "v1.0"


def download(datapath):
    dpath = os.path.join(datapath, "models", "transfertransfo", "gpt_personachat")
    if built(dpath, VERSION):
        return
    source = os.environ.get(SOURCE_ENV) or URL
    if built(dpath):  # an older version: rebuild
        remove_dir(dpath)
    make_dir(dpath)
    try:
        if source.startswith(("http://", "https://")):
            archive = os.path.join(dpath, ARCHIVE)
            fetch(source, archive)
        else:
            archive = os.path.expanduser(source)
        from parlai_transfertransfo.weights.convert import convert_personachat_checkpoint

        logging.info(f"converting {archive} into {dpath}/model")
        convert_personachat_checkpoint(archive, os.path.join(dpath, "model"), datapath)
    except BaseException:
        remove_dir(dpath)  # never leave a half-built entry that looks finished
        raise
    if source.startswith(("http://", "https://")):
        os.remove(archive)
    mark_done(dpath, VERSION)


def fetch(url, path):
    """Stream `url` to `path`; one clear line (no retries for minutes) when it fails."""
    import requests

    logging.info(f"downloading {url}")
    try:
        with requests.get(url, stream=True, timeout=(10, 60)) as response:
            response.raise_for_status()
            with open(path, "wb") as f:
                for chunk in response.iter_content(1 << 20):
                    f.write(chunk)
    except requests.RequestException as e:
        reason = type(e).__name__ if isinstance(e, requests.ConnectionError) else str(e)
        raise TransfertransfoError(
            f"cannot download {url} ({reason}): offline, fetch it elsewhere and set "
            f"{SOURCE_ENV}=/path/to/{ARCHIVE}"
        ) from None
