"""Load the model on a thread of its own, so that the process's main thread never runs an
OpenMP parallel region.

torch's CPU operations run on GNU OpenMP, which keeps a pool of worker threads for each
thread that has started a parallel region, for as long as that thread lives: the main
thread's, for the whole process. The server's model calls run on the scheduler's thread,
and while the main thread's pool exists, libgomp counts more threads than cores and lets
every worker spin only briefly before sleeping: each of a decoding step's small operations
then waits for a worker to wake. Measured on 2 cores (SmolLM2, a ~100-token context, 20
decoding steps on the scheduler's thread): model loaded on the main thread, 2.0-2.5 s for
the 20 steps and 0.7-1.9 s for the context; loaded on a thread that has ended, 0.91-0.96 s
and 0.21-0.27 s, as fast as the main thread itself (docs/serving.md).
"""
import threading


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs) run on a new thread that ends with it; its result, or its
    exception raised here."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as err:  # handed to the caller, as if fn ran here
            box["error"] = err

    thread = threading.Thread(target=run, name="transfertransfo-load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
