"""`python -m ppvi_cli` runs the `ppvi` console script."""

from ppvi_cli.cli.app import main

main()
