"""Built-in models. Importing this package registers each of them."""

from zoo.models import bn_mlp, mlp, skip_mlp  # noqa: F401
from zoo.models.common import DataConfig, DropoutRate, Width, input_size, num_classes

__all__ = ["DataConfig", "DropoutRate", "Width", "input_size", "num_classes"]
