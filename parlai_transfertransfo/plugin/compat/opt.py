"""Patches `parlai.core.opt`; the breakage is named in each docstring."""


def safe_opt_files(opt_module):
    """`Opt.load` reads a `.opt` that is not UTF-8 with `pickle.load`: a crafted `.opt` beside
    any model runs code as soon as `parlai interactive -mf` (or the argument parser, which
    reads it to find the agent) opens it; and a `.opt` that is not JSON is a
    JSONDecodeError traceback. JSON stays as it was; an old pickled `.opt` is read with an
    unpickler that builds nothing but dicts and plain values; anything else is one line."""
    import json
    import pickle

    from parlai_transfertransfo.errors import TransfertransfoError

    class OptUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in {("parlai.core.opt", "Opt"), ("parlai.utils.misc", "Opt"),
                                  ("parlai.core.utils", "Opt"), ("collections", "OrderedDict")}:
                return dict
            raise pickle.UnpicklingError(f"it would import {module}.{name}")

    opt_class = opt_module.Opt

    def load(cls, optfile):
        try:
            with open(optfile, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise TransfertransfoError(f"cannot read {optfile}: {e.strerror}") from None
        try:
            dct = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:  # ParlAI's oldest .opt files were pickles
            import io

            try:
                dct = OptUnpickler(io.BytesIO(raw)).load()
            except Exception as e:
                raise TransfertransfoError(
                    f"refusing to read {optfile}: not JSON, and not a plain pickled dict ({e})"
                ) from None
        except ValueError as e:
            raise TransfertransfoError(f"cannot read {optfile}: not JSON ({e})") from None
        if not isinstance(dct, dict):
            raise TransfertransfoError(f"cannot read {optfile}: it holds a {type(dct).__name__}, not options")
        for key in opt_module.__AUTOCLEAN_KEYS__:
            dct.pop(key, None)
        return cls(dct)

    opt_class.load = classmethod(load)
