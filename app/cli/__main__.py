"""`python -m app.cli`: the `respawn` command."""

from app.cli import main

main()
