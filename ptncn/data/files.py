"""Finding and verifying data files.

Lookup order for a file named in ``datasets/MANIFEST`` (e.g. ``mnist.npz``):

1. the ``data_dir`` argument (the CLI's ``--data-dir``),
2. the ``PTNCN_DATA`` environment variable,
3. ``datasets/`` in the repository (beside this package),
4. the user cache directory (``$XDG_CACHE_HOME/ptncn`` or ``~/.cache/ptncn``).

The first directory that holds the file wins.  On first use in a process the
file's size and sha256 are checked against the manifest; a mismatch is a
:class:`DataError` naming the file.  Nothing is ever downloaded implicitly:
:func:`download` (for users with internet access) fetches a file into the
cache and verifies it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass

REPO_DATASETS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "datasets")


class DataError(ValueError):
    """A data file is missing, corrupt, or holds something unexpected."""


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str
    source: str


# where the canonical copies can be fetched from (for `download`); the manifest's
# source column names one of these
SOURCES = {
    "ptb-char:train": None, "ptb-char:valid": None, "ptb-char:test": None,
    "ptb-word:train": None, "ptb-word:valid": None, "ptb-word:test": None,
    "contptncn-vocab": "https://raw.githubusercontent.com/AnkurMali/ContinualPTNCN/master/"
                       "ContPTNCN/data/ptb_char/vocab.txt",
    "mnist": None, "notmnist-small": None,
}
# Mikolov's simple-examples archive holds the PTB files; the npz files are
# repackaged (see ../shared/datasets/PROVENANCE.md): those have no direct URL and
# must be placed in a data directory by hand.
ARCHIVES = {"ptb": "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"}


def manifest_path() -> str:
    return os.path.join(REPO_DATASETS, "MANIFEST")


def read_manifest(path: str | None = None) -> dict[str, Entry]:
    out = {}
    with open(path or manifest_path()) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p, size, sha, src = line.split()
            out[p] = Entry(p, int(size), sha, src)
    return out


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ptncn")


def search_dirs(data_dir: str | None = None) -> list[str]:
    dirs = []
    if data_dir:
        dirs.append(os.fspath(data_dir))
    if os.environ.get("PTNCN_DATA"):
        dirs.append(os.environ["PTNCN_DATA"])
    dirs += [REPO_DATASETS, cache_dir()]
    return dirs


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: set[tuple[str, float, int]] = set()


def verify(path: str, entry: Entry) -> None:
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime, st.st_size)
    if key in _VERIFIED:
        return
    if st.st_size != entry.size:
        raise DataError(f"data file {path} has {st.st_size} bytes, the manifest says "
                        f"{entry.size} (sha256 {entry.sha256}): truncated or a different file")
    digest = sha256_of(path)
    if digest != entry.sha256:
        raise DataError(f"data file {path} is corrupt: sha256 {digest}, expected {entry.sha256}")
    _VERIFIED.add(key)


def find(name: str, data_dir: str | None = None, check: bool = True) -> str:
    """Path of manifest file ``name`` (e.g. "mnist.npz"), verified on first use."""
    manifest = read_manifest()
    if name not in manifest:
        raise DataError(f"{name!r} is not in the data manifest {manifest_path()}; "
                        f"known: {', '.join(manifest)}")
    entry = manifest[name]
    dirs = search_dirs(data_dir)
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p):
            if check:
                verify(p, entry)
            return p
    raise DataError(f"data file {name} not found; looked in: {', '.join(dirs)} "
                    f"(expected size {entry.size} bytes, sha256 {entry.sha256}). Set PTNCN_DATA "
                    f"or pass --data-dir; see datasets/README.md")


def download(name: str, url: str, dest_dir: str | None = None) -> str:
    """Fetch ``url`` to ``dest_dir/name`` (default: the cache), verify it, return the path.

    For users with internet access; never called by the tests.  The download
    goes to a temporary name and is renamed only after its sha256 matches.
    """
    entry = read_manifest()[name]
    dest = os.path.join(dest_dir or cache_dir(), name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".part"
    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
        while block := r.read(1 << 20):
            f.write(block)
    try:
        verify(tmp, entry)
    except DataError:
        os.unlink(tmp)
        raise
    os.replace(tmp, dest)
    return dest
