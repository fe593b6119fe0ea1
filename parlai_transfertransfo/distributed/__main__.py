"""torchrun ... -m parlai_transfertransfo.distributed train_model [options] (see torchrun.py)."""
from parlai_transfertransfo.distributed.torchrun import main

if __name__ == "__main__":
    main()
