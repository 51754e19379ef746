"""`python -m prefkit ...` (what `torchrun -m prefkit` runs) is the same as the `prefkit` command."""

from prefkit.cli import main

main()
