"""``python -m gpjax.bench SUBCOMMAND ...``: see `gpjax.bench`."""

from gpjax.bench import main

main()
