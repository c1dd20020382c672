"""Examples at the end of every subcommand's ``--help``, like ``gh``'s: one or two lines a user can
paste. Kept out of the command definitions so cli.py stays readable; :func:`add_examples` attaches
them as Click epilogs when the CLI is built. A new subcommand needs an entry here
(tests/test_first_hour.py checks that every command has one).

No example carries a fixed date: a date that is in the future today is in the past next year, and
``schedule`` refuses times in the past.
"""

from __future__ import annotations

from typing import Any

EXAMPLES: dict[str, tuple[str, ...]] = {
    "schedule": (
        "jobman schedule --image alpine:3.20 --at +10m -e GREETING=hello -- sh -c 'echo $GREETING'",
        "jobman schedule --image python:3.12 --cron '30 2 * * *' --tz Europe/Berlin --timeout 30m --title nightly",
    ),
    "schedules": (
        "jobman schedules list",
        "jobman schedules preview --cron '30 2 * * *' --tz Europe/Berlin -n 5",
    ),
    "schedules list": (
        "jobman schedules list",
        "jobman schedules list --json",
    ),
    "schedules show": (
        "jobman schedules show 1",
        "jobman schedules show 1 --json",
    ),
    "schedules pause": ("jobman schedules pause 1",),
    "schedules resume": ("jobman schedules resume 1",),
    "schedules delete": ("jobman schedules delete 1   # its jobs stay: jobman list --schedule 1",),
    "schedules preview": (
        "jobman schedules preview --cron '0 6 * * mon-fri' --tz America/New_York",
        "jobman schedules preview --cron '30 2 * * *' --tz Europe/Berlin --from 2027-03-27 -n 3 --json",
    ),
    "list": (
        "jobman list",
        "jobman list --status failed --json",
    ),
    "status": (
        "jobman status 1",
        "jobman status 1 --wait --wait-timeout 2h && echo finished",
    ),
    "callback": (
        "jobman callback 1 --status running",
        "jobman callback 1 --status failed --exit-code 3 --reason 'out of memory'",
    ),
    "cancel": ("jobman cancel 1",),
    "prune": (
        "jobman prune --ended-before 30d --dry-run",
        "jobman prune --ended-before 90d --json",
    ),
    "logs": (
        "jobman logs 1",
        "jobman logs 1 --follow --since 10m",
    ),
    "cost": (
        "jobman cost --since 30d --by title",
        "jobman cost --since 7d --by image --json",
    ),
    "daemon": (
        "jobman daemon --listen 0.0.0.0:8321 --public-url http://10.0.0.5:8321",
        "jobman daemon --once --public-url http://10.0.0.5:8321   # one pass, e.g. from cron, when no daemon runs",
    ),
    "store": ("jobman store init --store dynamodb://jobman-jobs",),
    "store init": (
        "jobman store init",
        "jobman store init --store dynamodb://jobman-jobs",
    ),
    "setup": ("jobman setup aws --dry-run",),
    "setup aws": (
        "jobman setup aws --dry-run",
        "jobman setup aws --region eu-west-1 --save",
    ),
}


def epilog(lines: tuple[str, ...]) -> str:
    """Click rewraps epilog paragraphs; ``\\b`` keeps each example on its own line."""
    return "\b\nExamples:\n" + "\n".join(f"  $ {line}" for line in lines)


def add_examples(group: Any, prefix: str = "") -> None:
    """Set the epilog of every (sub)command of ``group`` that has examples here."""
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if path in EXAMPLES and not command.epilog:
            command.epilog = epilog(EXAMPLES[path])
        if hasattr(command, "commands"):
            add_examples(command, f"{path} ")
