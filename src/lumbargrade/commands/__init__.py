"""One module per subcommand: ``register(subparsers) -> parser`` and ``run(args) -> int``.

Keep module tops light (argparse only): ``lumbargrade --help`` imports all of them.
"""
