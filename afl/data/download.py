"""Download MNIST and CIFAR-10 from mirrors, verified against the publishers' MD5s.

A mirror is a base URL; a file's URL is the base followed by the file name. Mirrors
must use https (http is accepted only on a loopback host, for tests), and redirects are
held to the same rule. Each file is streamed into a temporary file next to its
destination, MD5-checked, fsynced and atomically renamed into place; a failed or corrupt
transfer is deleted and the next mirror tried, so nothing partial is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from afl.data import cifar10, mnist
from afl.data.datasets import md5_file, resolve_root
from afl.errors import DataError

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
TIMEOUT_S = 30
CHUNK = 1 << 20
# Members of the CIFAR-10 archive that are extracted; anything else in it is ignored.
CIFAR10_MEMBERS = (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, "batches.meta", "readme.html")


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _allowed(url: str) -> bool:
    """Whether ``url`` is https, or http on a loopback host."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL that would be accepted as a mirror."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _allowed(newurl):
            raise urllib.error.HTTPError(
                newurl, code, f"refusing redirect to non-https {newurl}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirects)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fetch(url: str, dest: Path, md5: str, progress: bool) -> None:
    """Stream ``url`` into ``dest`` atomically; raise ``ValueError`` on an MD5 mismatch
    (and ``OSError``/``urllib.error.URLError`` on transfer errors), leaving no file."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, _OPENER.open(url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            digest = hashlib.md5()
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name,
                file=sys.stderr, disable=not progress,
            ) as bar:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != md5:
                raise ValueError(f"MD5 mismatch (expected {md5}, got {digest.hexdigest()})")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


def _download_file(
    name: str, dest: Path, md5: str, mirrors: tuple[str, ...], progress: bool
) -> None:
    """Make ``dest`` hold the file ``dest.name`` with MD5 ``md5``, trying mirrors in order."""
    if dest.is_file() and md5_file(dest) == md5:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    reason = "no mirror given"
    for base in mirrors:
        url = base + dest.name
        try:
            _fetch(url, dest, md5, progress)
            return
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
            reason = f"{url}: {e}"
    raise DataError(
        f"could not download {dest.name} for {name} from {', '.join(mirrors)} "
        f"(last error: {reason}): check the network or pass other mirrors"
    )


def _extract_cifar10(archive: Path, folder: Path) -> None:
    """Extract the expected members of the CIFAR-10 archive into ``folder`` atomically.

    Members are written by their base name into a temporary folder that is renamed into
    place, so a path in the archive can never point outside ``folder``.
    """
    wanted = {f"{cifar10.FOLDER}/{m}": m for m in CIFAR10_MEMBERS}
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name in wanted:
                    target = tmp / wanted[member.name]
                    with tar.extractfile(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
        missing = [m for m in CIFAR10_MEMBERS if not (tmp / m).is_file()]
        if missing:
            raise DataError(f"{archive}: archive lacks {', '.join(missing)}: delete it and retry")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"{archive}: could not extract ({e}): delete it and retry") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    _fsync_dir(folder.parent)


def _cifar10_present(folder: Path) -> bool:
    return all(
        (folder / name).is_file() and md5_file(folder / name) == md5
        for name, md5 in cifar10.MD5.items()
    )


def download(
    name: str,
    root: str | os.PathLike | None,
    mirrors: list[str] | tuple[str, ...] | None = None,
    progress: bool = True,
) -> Path:
    """Download dataset ``name`` ("mnist" or "cifar10") under ``root`` (see
    ``resolve_root``) and return its folder: ``<root>/MNIST/raw`` holding the four
    ``.gz`` files, or ``<root>/cifar-10-batches-py``. Files already present with the
    right MD5 are kept. ``mirrors`` defaults to ``MIRRORS[name]``."""
    if name not in MIRRORS:
        raise ValueError(f"cannot download {name!r}: choose one of {', '.join(MIRRORS)}")
    mirrors = MIRRORS[name] if mirrors is None else mirrors
    mirrors = tuple(m if m.endswith("/") else m + "/" for m in mirrors)
    for mirror in mirrors:
        if not _allowed(mirror):
            raise DataError(
                f"refusing mirror {mirror}: mirrors must use https (http only on a loopback "
                "host): fix the mirror URL"
            )
    root = resolve_root(root)
    if name == "mnist":
        folder = root / mnist.FOLDER
        for filename, md5 in mnist.MD5.items():
            _download_file(name, folder / filename, md5, mirrors, progress)
        return folder
    folder = root / cifar10.FOLDER
    if not _cifar10_present(folder):
        archive = root / cifar10.ARCHIVE
        _download_file(name, archive, cifar10.ARCHIVE_MD5, mirrors, progress)
        _extract_cifar10(archive, folder)
        archive.unlink()
        if not _cifar10_present(folder):
            raise DataError(f"{folder}: extracted files fail their MD5 check: delete it and retry")
    return folder
