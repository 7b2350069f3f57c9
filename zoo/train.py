"""``python -m zoo.train RECIPE [section.key=value ...]``: training from any folder, checkout or not.

    accelerate launch -m zoo.train mlp trainer.epochs=3
    accelerate launch --multi_gpu --num_processes 2 -m zoo.train recipes/my.yaml

RECIPE is a YAML file or a shipped recipe's name (``zoo recipes`` lists them).
"""

from zoo.process_exit import exit_without_teardown
from zoo.run import main

if __name__ == "__main__":
    exit_without_teardown(main())
