"""Train a zoo model from a YAML recipe, on CPU, one GPU or many (the checkout's script).

    accelerate launch launch/train.py recipes/mlp.yaml [section.key=value ...]
    accelerate launch --multi_gpu --num_processes 2 launch/train.py recipes/mlp.yaml

The same as ``accelerate launch -m zoo.train RECIPE``, which an installed package runs from any folder.
"""

import sys
from pathlib import Path

# Runnable from a checkout without installing: the package sits beside this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.process_exit import exit_without_teardown
from zoo.run import main

if __name__ == "__main__":
    exit_without_teardown(main(prog="launch/train.py"))
