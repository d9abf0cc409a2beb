"""``python -m kapell.cli``: the same as the ``kapell`` command."""

from kapell.cli.main import main

main()
