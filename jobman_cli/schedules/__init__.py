"""Recurring schedules (DESIGN.md section 14): the model, when occurrences happen, and the use cases.

The daemon's side (turning due occurrences into jobs) is :mod:`jobman_cli.daemon.schedules`; the
command line is :mod:`jobman_cli.cli_schedules`; the REST routes :mod:`jobman_cli.api_schedules`.
"""
