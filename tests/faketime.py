"""Real processes whose wall clock a test steps: libfaketime (``apt-get install -y faketime``).

:class:`SteppedWallClock` owns a timestamp file; :meth:`SteppedWallClock.env` adds to a subprocess's
environment what makes its wall clock follow the file while its monotonic clock stays real:

* ``LD_PRELOAD`` = libfaketime, ``FAKETIME_TIMESTAMP_FILE`` = the file, ``FAKETIME_NO_CACHE=1``
  (the file is read at every clock call, so a write takes effect at once),
  ``FAKETIME_DONT_FAKE_MONOTONIC=1`` (``CLOCK_MONOTONIC`` is left alone: a step is a wall-clock
  step only, as NTP or a resumed VM makes it);
* a ``sitecustomize`` on ``PYTHONPATH`` that makes ``time.sleep`` wait on ``select``: libfaketime
  0.9.10 (Debian 12) answers Python 3.11's ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` with
  EINVAL when monotonic time is not faked, so every ``time.sleep`` (botocore's retry pauses, for one)
  would raise. ``select``, ``threading`` waits and the daemon's own sleeping are unaffected.

:meth:`SteppedWallClock.set_offset` writes ``+N``/``-N`` seconds relative to the real clock (atomic
rename, so a reader never sees a half-written file).

Without libfaketime the :func:`libfaketime` helper skips the test, unless ``JOBMAN_REQUIRE_FAKETIME=1``
(set by ``.ci/run``), which makes it a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CANDIDATES = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
              "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
              "/usr/lib/faketime/libfaketime.so.1")

SITECUSTOMIZE = '''\
"""Test shim (tests/faketime.py): time.sleep on select, as libfaketime 0.9.10 breaks clock_nanosleep."""
import select as _select
import time as _time


def _sleep(seconds):
    end = _time.monotonic() + seconds
    while True:
        left = end - _time.monotonic()
        if left <= 0:
            return
        _select.select([], [], [], left)


_time.sleep = _sleep
'''


def libfaketime() -> str:
    for path in CANDIDATES:
        if os.path.exists(path):
            return path
    if os.environ.get("JOBMAN_REQUIRE_FAKETIME") == "1":
        pytest.fail("libfaketime is not installed, and JOBMAN_REQUIRE_FAKETIME=1")
    pytest.skip("libfaketime is not installed (apt-get install -y faketime; .ci/run does)")


class SteppedWallClock:
    def __init__(self, workdir: Path, offset: float = 0.0) -> None:
        self.library = libfaketime()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.file = self.workdir / "faketime"
        self.shim = self.workdir / "faketime-shim"
        self.shim.mkdir(exist_ok=True)
        (self.shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.offset = 0.0
        self.set_offset(offset)

    def set_offset(self, seconds: float) -> None:
        """From now on the processes' wall clock reads the real time plus ``seconds``."""
        self.offset = float(seconds)
        tmp = self.file.with_name(self.file.name + ".tmp")
        tmp.write_text(f"{'+' if seconds >= 0 else '-'}{abs(int(seconds))}\n")
        os.replace(tmp, self.file)

    def step(self, seconds: float) -> None:
        self.set_offset(self.offset + seconds)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env.update({
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(self.shim), base.get("PYTHONPATH", "")) if p),
        })
        return env

    def check(self, base: dict[str, str]) -> None:
        """Prove on this machine that a child's wall clock follows the file and its monotonic
        clock and ``time.sleep`` do not (fails the test otherwise: the premise would be false)."""
        probe = ("import time, datetime, json; w = time.time(); m = time.monotonic(); time.sleep(0.05); "
                 "print(json.dumps([w, m, time.monotonic() - m]))")
        import json
        import time

        before_wall, before_mono = time.time(), time.monotonic()
        out = subprocess.run([sys.executable, "-c", probe], env=self.env(base), capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        wall, mono, slept = json.loads(out.stdout)
        assert abs(wall - (before_wall + self.offset)) < 5, (wall, before_wall, self.offset)
        assert abs(mono - before_mono) < 5 and 0.04 < slept < 2, (mono, before_mono, slept)
