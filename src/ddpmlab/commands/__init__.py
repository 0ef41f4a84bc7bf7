"""The code behind each command: one file per `ddpmlab` command, the workflow phases the CLI dispatches to."""
