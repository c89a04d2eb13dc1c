"""train.py's main with GatedLoRALinear injected: what `accelerate launch` runs in the 2-process gated test."""
import sys

import train
from train_runs import GatedLoRALinear

if __name__ == "__main__":
    sys.exit(train.main(layer_class=GatedLoRALinear))
