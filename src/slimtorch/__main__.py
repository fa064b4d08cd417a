"""``python -m slimtorch`` runs the command-line interface.

``python -m`` puts the working folder first on ``sys.path``; the console script does not, and
neither does this entry point: a module lying in the working folder (downloaded beside a model
file, say) is never imported implicitly. Use ``PYTHONPATH`` to import your own factories.
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()) and sys.flags.safe_path == 0:
    del sys.path[0]

from slimtorch.cli.main import main  # after the sys.path fix above

raise SystemExit(main())
