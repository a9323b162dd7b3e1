"""``python -m dedup``: the command line."""

from dedup.cli import main

main()
