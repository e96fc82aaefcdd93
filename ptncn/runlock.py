"""One owner per run folder: an exclusive lock file that writers take and readers consult.

``with RunLock(folder, "train"):`` creates ``folder/.ptncn-lock`` atomically
(``O_CREAT | O_EXCL``) holding the owner's pid, host, command and start time, and
removes it on exit.  A second writer gets one :class:`RunLockedError` naming the
owner.  A lock left by a process that no longer runs on this host is stale and is
taken over; a lock from another host is trusted (its pid cannot be checked here).
The writer that takes the lock removes the partial files a killed writer left behind
(:func:`clean_partial_files`).
Readers never take the lock: :func:`lock_owner` tells them whether a live writer
holds the folder.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import socket

LOCK_NAME = ".ptncn-lock"


class RunLockedError(RuntimeError):
    """The run folder is held by another live process."""


def _alive(pid: int) -> bool:
    if pid <= 0:                     # 0 and -1 would address process groups, not one owner
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # exists, owned by someone else
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """True for a process that has exited but not been reaped (Linux; else False)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}                    # unreadable or half-written: treated as stale below


def lock_owner(folder) -> dict | None:
    """The live owner of ``folder`` (pid, host, command, started), or None."""
    info = _read(os.path.join(os.fspath(folder), LOCK_NAME))
    if not info:
        return None
    if info.get("host") == socket.gethostname() and not _alive(_pid(info)):
        return None
    return info


def _pid(info: dict) -> int:
    pid = info.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else -1


def describe(info: dict) -> str:
    return (f"`ptncn {info.get('command', '?')}` (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}, since {info.get('started', '?')})")


#: files a killed writer can leave half-written in its folder: model files being saved
#: (written under a temporary name, then renamed) and a recording being rewritten on resume
PARTIAL_PATTERNS = (".ptncn-*.npz", "*.resume-tmp")


def clean_partial_files(folder) -> list[str]:
    """Remove the partial files of :data:`PARTIAL_PATTERNS` from ``folder`` (its top
    level); only safe for the holder of the folder's lock.  Returns what was removed."""
    removed = []
    for pattern in PARTIAL_PATTERNS:
        for path in glob.glob(os.path.join(glob.escape(os.fspath(folder)), pattern)):
            os.unlink(path)
            removed.append(path)
    return removed


class RunLock:
    """Exclusive ownership of a run folder for a writing command (a context manager)."""

    def __init__(self, folder, command: str):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                     "started": _dt.datetime.now(_dt.timezone.utc).isoformat()}
        self.held = False

    def acquire(self) -> "RunLock":
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(2):           # a second try after removing a stale lock
            if self._create():
                self.held = True
                clean_partial_files(self.folder)
                return self
            owner = lock_owner(self.folder)
            if owner:
                raise RunLockedError(f"{self.folder} is in use by {describe(owner)}; "
                                     "wait for it or use another --out")
            self._take_stale()
        raise RunLockedError(f"{self.folder}: could not take the lock {self.path}")

    def _create(self) -> bool:
        """Create the lock file with its content in one step (written under a private name,
        then hard-linked: a reader never sees an empty lock); False if one exists."""
        tmp = f"{self.path}.new-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.info, f)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:              # no hard links here: exclusive create, then write
            return self._create_exclusive()
        finally:
            os.unlink(tmp)

    def _create_exclusive(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.info, f)
        return True

    def _take_stale(self) -> None:
        """Remove a stale lock: renamed away first (atomic, so of two processes only one
        gets it); a live lock renamed by mistake is put back."""
        grabbed = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, grabbed)
        except FileNotFoundError:
            return
        info = _read(grabbed)
        if info and (info.get("host") != socket.gethostname() or _alive(_pid(info))):
            try:
                os.link(grabbed, self.path)
            except FileExistsError:
                pass
        os.unlink(grabbed)

    def release(self) -> None:
        if self.held:
            self.held = False
            if (_read(self.path) or {}).get("pid") == self.info["pid"]:
                os.unlink(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
