"""The `prodcat` command: one module per group of commands, all sharing `common`.

`main` holds the catalogue, training and prediction commands, `desk` the review desk's (`queue`,
`review ...`). Nothing in prodcat imports this package: it is the outermost layer.
"""

from prodcat.cli.desk import register as _register_desk
from prodcat.cli.main import app

_register_desk(app)

__all__ = ["app"]
