"""Regenerate completions/ from the current Click CLI: ``python scripts/gen_completions.py``.

tests/test_completions.py fails when the checked-in files differ from what this produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

from click.shell_completion import get_completion_class

from jobman_cli.cli import cli

FILES = {"bash": "jobman.bash", "zsh": "_jobman", "fish": "jobman.fish"}


def render(shell: str) -> str:
    cls = get_completion_class(shell)
    assert cls is not None, shell
    return cls(cli, {}, "jobman", "_JOBMAN_COMPLETE").source()


def main() -> int:
    out = Path(__file__).resolve().parent.parent / "completions"
    out.mkdir(exist_ok=True)
    for shell, name in FILES.items():
        (out / name).write_text(render(shell))
    print(f"wrote {', '.join(FILES.values())} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
