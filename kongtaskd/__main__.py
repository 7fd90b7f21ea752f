"""``python -m kongtaskd`` is the same as the ``kongtaskd`` command."""

from kongtaskd.cli import entry

entry()
