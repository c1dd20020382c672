"""Durability that a SIGKILL cannot test: the order of a store commit's system calls.

A SIGKILL leaves the page cache intact, so ``test_store_crash.py`` stays green even if every
``fsync`` is removed; only a power cut or a kernel crash would show it. Following the ALICE study of
crash consistency (Pillai et al., OSDI 2014), this test records the system calls of real commits
(``jobman schedule`` creating a TinyDB store, then adding to it) under ``strace`` and checks the
crash-consistent protocol on the recorded trace:

1. a temp file in the store's directory is created (``O_EXCL``) and written in full,
2. that file is fsynced after its last write (its data is on disk before it gets the name),
3. it is renamed (or, for a new store, hard-linked) onto the store's name, and the store file
   itself is never written in place,
4. the directory is then fsynced (the rename itself is on disk before the command says "done").

Removing any ``os.fsync`` from the store code, or moving it, fails this test. It needs ``strace``
(``.ci/run`` installs it); without it the test is skipped, unless ``JOBMAN_REQUIRE_STRACE=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SYSCALLS = "openat,open,creat,write,pwrite64,writev,fsync,fdatasync,rename,renameat,renameat2,link,linkat"
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<name>\w+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)(?:<(?P<path>[^>]*)>)?")
_FD_PATH = re.compile(r"^\d+<(?P<path>[^>]*)>")
_STRINGS = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Call:
    name: str
    path: str  # the file it acts on (the fd's path; the new name for rename/link)
    source: str  # rename/link: the old name
    ret: int
    flags: str


def strace() -> str:
    found = shutil.which("strace")
    if found is None:
        if os.environ.get("JOBMAN_REQUIRE_STRACE") == "1":
            pytest.fail("strace is not installed, and JOBMAN_REQUIRE_STRACE=1")
        pytest.skip("strace is not installed (apt-get install strace; .ci/run does)")
    probe = subprocess.run([found, "-f", "-qq", "-o", os.devnull, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        if os.environ.get("JOBMAN_REQUIRE_STRACE") == "1":
            pytest.fail(f"strace cannot trace here: {probe.stderr.strip()}")
        pytest.skip(f"strace cannot trace here (ptrace not permitted?): {probe.stderr.strip()}")
    return found


def parse(trace: str) -> list[Call]:
    """The successful calls of a ``strace -f -y`` log, ``<unfinished ...>`` pieces joined."""
    pending: dict[str, str] = {}
    calls = []
    for raw in trace.splitlines():
        pid = raw.split(None, 1)[0]
        if raw.endswith("<unfinished ...>"):
            pending[pid] = raw[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"^(\d+)\s+<\.\.\. \w+ resumed>\s?(.*)$", raw)
        if resumed:
            raw = pending.pop(pid, f"{pid} ?(") + resumed.group(2)
        match = _LINE.match(raw)
        if match is None or int(match["ret"]) < 0:
            continue
        name, args = match["name"], match["args"]
        strings = [s.encode().decode("unicode_escape") for s in _STRINGS.findall(args)]
        if name.startswith(("rename", "link")):
            calls.append(Call(name, strings[-1], strings[0], int(match["ret"]), ""))
        elif name in ("openat", "open", "creat"):
            calls.append(Call("open", match["path"] or (strings[0] if strings else ""), "", int(match["ret"]), args))
        else:
            fd = _FD_PATH.match(args)
            calls.append(Call(name, fd["path"] if fd else "", "", int(match["ret"]), ""))
    return calls


def commits(calls: list[Call], store: Path) -> list[list[Call]]:
    """The calls of each commit onto ``store``: from its temp file's creation to the next one."""
    directory, temp_prefix = str(store.parent), str(store.parent / f".{store.name}.")
    starts = [i for i, c in enumerate(calls) if c.name == "open" and c.path.startswith(temp_prefix)]
    return [[c for c in calls[a:b] if c.path.startswith(directory) or c.source.startswith(directory)]
            for a, b in zip(starts, starts[1:] + [len(calls)])]


def check_commit(steps: list[Call], store: Path) -> str:
    """Assert the crash-consistent order in one commit's calls; returns how it published."""
    temp = steps[0].path
    assert "O_EXCL" in steps[0].flags and "O_CREAT" in steps[0].flags, steps[0]
    order = [c.name for c in steps]
    writes = [i for i, c in enumerate(steps) if c.name in ("write", "pwrite64", "writev") and c.path == temp]
    syncs = [i for i, c in enumerate(steps) if c.name in ("fsync", "fdatasync") and c.path == temp]
    published = [i for i, c in enumerate(steps) if c.name.startswith(("rename", "link"))
                 and c.source == temp and c.path == str(store)]
    dir_syncs = [i for i, c in enumerate(steps) if c.name in ("fsync", "fdatasync") and c.path == str(store.parent)]
    assert writes, f"the temp file was never written: {order}"
    assert syncs and syncs[-1] > writes[-1], f"the temp file is not fsynced after its last write: {order}"
    assert len(published) == 1, f"the temp file is not renamed or linked onto {store.name}: {order}"
    assert published[0] > syncs[-1], f"renamed before its data was fsynced: {order}"
    assert dir_syncs and dir_syncs[-1] > published[0], f"the directory is not fsynced after the rename: {order}"
    assert not any(c.name.startswith(("write", "pwrite")) and c.path == str(store) for c in steps), \
        "the store file was written in place"
    size = sum(c.ret for i, c in enumerate(steps) if i in writes)
    return f"{steps[published[0]].name}:{size}"


def test_a_commit_writes_syncs_renames_then_syncs_the_directory(tmp_path: Path) -> None:
    tracer = strace()
    store = tmp_path / "store" / "jobs.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMAN_")}
    env["JOBMAN_HOME"] = str(tmp_path / "home")
    published = []
    for n in range(2):  # the first creates the store (and adds job 1), the second adds job 2
        log = tmp_path / f"trace{n}.txt"
        done = subprocess.run([tracer, "-f", "-y", "-qq", "-s", "0", "-e", f"trace={SYSCALLS}", "-o", str(log),
                               sys.executable, "-m", "jobman_cli", "--store", str(store), "schedule",
                               "--image", "alpine:3.20", "--at", "+1h", "-q"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == str(n + 1), done.stderr
        found = commits(parse(log.read_text()), store)
        assert found, f"no commit onto {store} in the trace"
        published += [check_commit(steps, store) for steps in found]
    # A new store is linked into place (never over a file that appeared meanwhile); every other
    # commit renames. The last commit wrote exactly the bytes the store file holds now.
    assert published[0].startswith("link") and all(p.startswith("rename") for p in published[1:]), published
    assert int(published[-1].split(":")[1]) == store.stat().st_size
