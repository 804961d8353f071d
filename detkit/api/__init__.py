"""The library behind the CLI: one plain function per subcommand, one module each.

``detkit.api.<module>.<function>(...)`` does the work of one subcommand and returns a
result object; it never prints tables or exits (the CLI renders). Modules import their
heavy dependencies (Keras) themselves, so ``detkit --help`` stays fast.
"""
