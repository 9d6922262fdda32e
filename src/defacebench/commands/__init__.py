"""One module per ``defacebench`` subcommand, each with ``main(argv=None) -> int``."""
