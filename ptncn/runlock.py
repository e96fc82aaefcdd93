"""One owner per run folder: an exclusive lock file that writers take and readers consult.

``with RunLock(folder, "train"):`` creates ``folder/.ptncn-lock`` atomically
(``O_CREAT | O_EXCL``) holding the owner's pid, host, command and start time, and
removes it on exit.  A second writer gets one :class:`RunLockedError` naming the
owner.  A lock left by a process that no longer runs on this host is stale and is
taken over; a lock from another host is trusted (its pid cannot be checked here).
Readers never take the lock: :func:`lock_owner` tells them whether a live writer
holds the folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket

LOCK_NAME = ".ptncn-lock"


class RunLockedError(RuntimeError):
    """The run folder is held by another live process."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # exists, owned by someone else
        return True
    return True


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
    if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
        return None
    return info


def describe(info: dict) -> str:
    return (f"`ptncn {info.get('command', '?')}` (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}, since {info.get('started', '?')})")


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
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = lock_owner(self.folder)
                if owner:
                    raise RunLockedError(f"{self.folder} is in use by {describe(owner)}; "
                                         "wait for it or use another --out") from None
                self._take_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.info, f)
            self.held = True
            return self
        raise RunLockedError(f"{self.folder}: could not take the lock {self.path}")

    def _take_stale(self) -> None:
        """Remove a stale lock: renamed away first (atomic, so of two processes only one
        gets it); a live lock renamed by mistake is put back."""
        grabbed = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, grabbed)
        except FileNotFoundError:
            return
        info = _read(grabbed)
        if info and (info.get("host") != socket.gethostname() or _alive(int(info["pid"]))):
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
