"""`python -m llmdctl` runs the CLI."""

from llmdctl.cli import main

main()
