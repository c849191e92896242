"""``python -m underway``: the command line."""

from .cli import main

main(prog_name="underway")
