"""Where `personachat_self_original.json` comes from: `--personachat-json PATH`, or the
recipe's own URL, downloaded once into `{datapath}/personachat_json/` as ParlAI tasks
build their data (`built` / `mark_done`).  A failed download leaves nothing behind."""
import os
import shutil
import tempfile

import parlai.core.build_data as build_data
import parlai.utils.logging as logging

from parlai_transfertransfo.errors import TransfertransfoError

URL = "https://s3.amazonaws.com/datasets.huggingface.co/personachat/personachat_self_original.json"
FILENAME = "personachat_self_original.json"
VERSION = "v1.0"


def build(opt, url=URL):
    """The path of the JSON file to read, downloading it if needed."""
    given = opt.get("personachat_json")
    if given:
        if not os.path.isfile(given):
            raise TransfertransfoError(f"--personachat-json {given}: no such file")
        return given
    dpath = os.path.join(opt["datapath"], "personachat_json")
    path = os.path.join(dpath, FILENAME)
    if build_data.built(dpath, VERSION) and os.path.isfile(path):
        return path
    if os.path.isfile(path):  # put there by hand, e.g. behind a firewall
        build_data.mark_done(dpath, VERSION)
        return path
    logging.info(f"building data: {dpath}")
    build_data.make_dir(opt["datapath"])
    staging = tempfile.mkdtemp(prefix=".personachat_json.", dir=opt["datapath"])
    try:
        build_data.download(url, staging, FILENAME, num_retries=2)
        build_data.make_dir(dpath)
        os.replace(os.path.join(staging, FILENAME), path)
    except Exception as err:  # requests' errors, RuntimeError after retries, OSError
        raise TransfertransfoError(
            f"could not download {url} ({err}); give the file with "
            f"--personachat-json PATH, or put it at {path}"
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    build_data.mark_done(dpath, VERSION)
    return path
