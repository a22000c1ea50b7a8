"""The ``automl`` subcommands, one module each: ``add_parser(sub)`` declares it, ``run(args)``
does it. They sit above everything else in ``automl``: nothing imports them but the CLI."""
