"""The file mechanics of the TinyDB store, independent of what the jobs mean: a lock with a
generation nonce, labelled lock-free reads, atomic writes, the JSON codec, and group commit.

Why a *sidecar* lock file (``jobs.json.lock``) and not a lock on the data file itself: every write
replaces the data file by rename, so a lock taken on the old inode would not exclude a process that
opened the new one. The sidecar is never replaced, so ``flock`` on it is one lock for everybody.

The sidecar also carries a **generation nonce** (32 hex characters at offset 0). Every writer, while
holding the exclusive lock, puts a fresh random nonce there *before* it replaces the data file. A
long-lived process may therefore keep a parsed copy of the file and reuse it while it is provably
unchanged. Random nonces, unlike ``(inode, mtime, size)``, are never reused. The nonce is not
fsynced: it only has to be right while processes live, and a reboot drops every in-memory copy.

Why the label is sound (:func:`read_labelled`, :func:`still_current`). A copy is labelled
``(nonce, stat)`` only if the nonce read *before* opening the file equals the one read *after*
reading it. Later, ``stat(path)`` is compared first and the nonce second. If both match, no writer
has written a nonce since the label was taken, so at most one rename happened meanwhile: that of the
writer who wrote the labelled nonce and was mid-commit while we read. Its new file was created while
ours was still linked, so it has a different inode and the stat would differ. Inode reuse needs yet
another writer, which would have changed the nonce. So a match proves the file still holds exactly
the bytes that were parsed. The data file's inodes are never modified after the rename (writers
always write a new temp file), which is also why readers need no lock at all.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import stat as stat_mod
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson

from ..errors import StoreError

NONCE_SIZE = 32
#: The daemon's lock beside a TinyDB store (``jobman_cli.daemon.main.DaemonLock`` makes it).
DAEMON_LOCK_SUFFIX = ".daemon.lock"
FILE_MODE = 0o600
DIR_MODE = 0o700


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


class FileLock:
    """An exclusive lock between processes (``flock``) *and* threads (``flock`` alone would let two
    threads of one process in at once, because it belongs to the open file, not to the thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._writable = False
        self._mutex = threading.Lock()  # one holder per process at a time
        self._fd_guard = threading.Lock()  # opening/closing the descriptor (readers never wait on _mutex)

    def _open(self, create: bool) -> int | None:
        """The lock file's descriptor; with ``create`` also the file (0600) and its directory (0700)."""
        with self._fd_guard:
            if self._fd is not None and (self._writable or not create):
                return self._fd
            return self._reopen(create)

    def _reopen(self, create: bool) -> int | None:
        try:
            if create:
                ensure_dir(self.path.parent)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
                writable = True
            else:
                try:
                    fd, writable = os.open(self.path, os.O_RDWR | os.O_CLOEXEC), True
                except PermissionError:
                    fd, writable = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC), False
        except FileNotFoundError:
            if create:
                raise StoreError(f"{self.path}: cannot create lock file (directory vanished)") from None
            return None
        except OSError as err:
            raise StoreError(f"{self.path}: cannot open lock file: {_reason(err)}") from None
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._writable = fd, writable
        return fd

    def read_nonce(self) -> bytes | None:
        """The current generation (``None`` while no lock file exists). Costs one ``pread``."""
        fd = self._fd if self._fd is not None else self._open(create=False)
        if fd is None:
            return None
        try:
            return os.pread(fd, NONCE_SIZE, 0)
        except OSError:
            return None

    @staticmethod
    def new_nonce() -> bytes:
        """A fresh generation nonce, to announce (in this process) before :meth:`write_nonce`."""
        return os.urandom(NONCE_SIZE // 2).hex().encode()

    def write_nonce(self, nonce: bytes) -> None:
        """Start generation ``nonce`` (from :meth:`new_nonce`). Only call while holding :meth:`exclusive`."""
        assert self._fd is not None and self._writable and len(nonce) == NONCE_SIZE
        try:
            os.pwrite(self._fd, nonce, 0)
        except OSError as err:
            raise StoreError(f"{self.path}: cannot write: {_reason(err)}") from None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock (creating the lock file and directory if needed) for a read-modify-write."""
        with self._mutex:
            fd = self._open(create=True)
            assert fd is not None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:
                raise StoreError(f"{self.path}: cannot lock: {_reason(err)}") from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._mutex, self._fd_guard:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def ensure_dir(directory: Path) -> None:
    """Create a missing store directory private to its user (0700); leave an existing one alone."""
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"{directory}: cannot create directory: {_reason(err)}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path: Path, chunks: Sequence[bytes | memoryview], *, create_only: bool = False,
                 renamed: Callable[[os.stat_result], None] | None = None) -> None:
    """Replace ``path`` with ``chunks`` (concatenated) so that every reader sees the old or the new
    file, never a mix. (Chunks, so a caller can splice without copying megabytes first.)

    Temp file in the same directory (mode 0600), write, fsync, rename over ``path``, fsync the
    directory (so the rename itself survives a power cut). ``create_only`` links instead of renaming,
    which fails if something appeared at ``path`` meanwhile: a new store never clobbers a file.
    ``renamed`` is called with the new file's stat the moment it is visible to other processes.
    """
    tmp = path.with_name(f"{temp_prefix(path)}{os.urandom(6).hex()}.tmp")
    visible = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if create_only:
            _link_new(tmp, path)
        else:
            os.replace(tmp, path)
        visible = True
        if renamed is not None:
            renamed(os.stat(path))
        _fsync_dir(path.parent)
    except OSError as err:
        if visible:
            raise StoreError(f"{path}: written, but not confirmed on disk: {_reason(err)}") from None
        raise StoreError(f"{path}: cannot write: {_reason(err)}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _link_new(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StoreError(f"{path}: appeared while the store was being created; not touching it") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(path):  # no hard links here (some network/FUSE file systems)
            raise StoreError(f"{path}: appeared while the store was being created; not touching it") from None
        os.replace(tmp, path)


def daemon_holding(path: Path) -> int | None:
    """The pid of another live process that holds ``<path>.daemon.lock`` (a running daemon on this
    store; 0 if its pid is not written yet), or None if nobody else holds it.

    Used before creating a missing store file: a daemon that holds the lock has had a store at
    this path, so a missing file was deleted or moved under it, and a fresh file would restart job
    ids at 1 beside the daemon's jobs. The probe is a non-blocking shared ``flock`` taken and
    dropped at once (``flock`` is what the daemon holds; the kernel drops it when the daemon dies);
    a daemon starting in that very microsecond would see "already running" and can simply be
    started again. Our own process's lock (a daemon creating its store) does not count."""
    lock_path = path.with_name(path.name + DAEMON_LOCK_SUFFIX)
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            pid = int(text) if text.isdigit() else 0
            return None if pid == os.getpid() else pid
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Delete temp files left by writers that were killed mid-write.

    Only call while holding the exclusive lock: then no live writer owns a temp file.
    """
    prefix = temp_prefix(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            try:
                os.unlink(path.parent / name)
            except OSError:
                pass


# --------------------------------------------------------------------------- labelled reads
Label = tuple


def stat_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_labelled(path: Path, lock: FileLock) -> tuple[bytes, Label | None] | None:
    """The file's bytes and their label (None if a writer raced us), or None if there is no file."""
    before = lock.read_nonce()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"{path}: cannot read: {_reason(err)}") from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise StoreError(f"{path}: cannot read: not a regular file")
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read()
    except OSError as err:
        raise StoreError(f"{path}: cannot read: {_reason(err)}") from None
    finally:
        os.close(fd)
    return data, ((before, stat_key(st)) if lock.read_nonce() == before else None)


def still_current(path: Path, lock: FileLock, label: Label) -> bool:
    """One ``stat`` and one ``pread``: does the file still hold the bytes labelled ``label``?"""
    try:
        st = os.stat(path)  # stat first, then the nonce: the order the argument above needs
    except OSError:
        return False
    return stat_key(st) == label[1] and lock.read_nonce() == label[0]


# --------------------------------------------------------------------------- JSON codec
def decode_json(path: Path, data: bytes) -> Any:
    """Parse with orjson, or raise a one-line StoreError for an empty or invalid file."""
    if not data or data.isspace():
        raise StoreError(f"{path}: file is empty, not a jobman store (remove it or choose another --db)")
    enabled = gc.isenabled()
    gc.disable()  # the collector would walk the ~200k fresh objects over and over: ~20% of the parse
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        reason = str(err).splitlines()[0] if str(err) else "invalid JSON"
        raise StoreError(f"{path}: not valid JSON, the file is corrupt or truncated ({reason})") from None
    finally:
        if enabled:
            gc.enable()


# --------------------------------------------------------------------------- group commit
@dataclass
class Request:
    apply: Callable[[Any], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Batches one process's concurrent writers behind a single lock holder.

    While a leader holds the file lock and writes, later callers queue. When it is done, one of
    them takes the whole queue as the next batch: ``run(batch)`` applies every request in order
    (setting each one's ``result`` or its own ``error``) and writes once. So N threads pay for
    about one lock, one validation and one file write instead of N, and the file is still only
    written by lock holders. If ``run`` itself fails, nothing was written: every request of the
    batch without an error of its own gets a StoreError.
    """

    def __init__(self, run: Callable[[list[Request]], None], where: Path) -> None:
        self._run, self._where = run, where
        self._cond = threading.Condition()
        self._queue: list[Request] = []
        self._leading = False
        self.closed = False

    def submit(self, apply: Callable[[Any], Any]) -> Any:
        request = Request(apply)
        batch: list[Request] = []
        with self._cond:
            if self.closed:
                raise StoreError(f"{self._where}: store is closed")
            self._queue.append(request)
            while self._leading and not request.done:
                self._cond.wait()
            if not request.done:
                self._leading = True
                batch, self._queue = self._queue, []
        if batch:
            try:
                self._run(batch)
            except BaseException as err:
                message = err.message if isinstance(err, StoreError) else (
                    f"{self._where}: commit aborted ({type(err).__name__}: {err})")
                for item in batch:
                    if item.error is None:
                        item.error = StoreError(message)  # one exception object per waiting thread
                if not isinstance(err, Exception):
                    raise
            finally:
                with self._cond:
                    for item in batch:
                        item.done = True
                    self._leading = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.result

    def close(self) -> None:
        with self._cond:
            self.closed = True
