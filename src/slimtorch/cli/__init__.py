"""The ``slimtorch`` command line: one module per subcommand, built from the config dataclasses.

:mod:`~slimtorch.cli.main` builds the parser from the subcommand modules and runs one;
:mod:`~slimtorch.cli.fields` turns a config dataclass's fields into options, so a command's
defaults are its config's; :mod:`~slimtorch.cli.options` holds the other shared options and
checks, :mod:`~slimtorch.cli.errors` the one-line messages for user mistakes. Nothing outside
this package imports it.
"""
