"""`python -m pgmlops`: the same as the `pgmlops` command."""

from pgmlops.cli import main

main()
