"""The quick start without the Hub: the default data set falls back to the MNIST sample the package ships.

Only the default ``data.path`` does: a recipe that names any other data set gets the clean error
it always got, since no sample can stand in for data the user chose.
"""

from __future__ import annotations

from zoo.samples import mnist_path

DEFAULT_DATA_PATH = "ylecun/mnist"  # the shipped recipes' data set (and DataSection's default)


def offline_substitute(data_path: str, data_name: str | None) -> str | None:
    """The folder to train on instead of ``data_path`` when the Hub cannot be reached, or None.

    The bundled sample has the Hub set's layout and config name (``mnist``), so it stands in for
    ``ylecun/mnist`` with or without ``data.name``.
    """
    if data_path != DEFAULT_DATA_PATH or data_name not in (None, "mnist"):
        return None
    return str(mnist_path())
