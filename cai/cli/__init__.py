"""The `cai` command line: one module per command group."""
