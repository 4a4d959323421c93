import functools
import hashlib
import http.server
import io
import pickle
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from afl.data import cifar10, download, mnist, read_cifar10
from afl.errors import DataError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _RedirectHandler(_QuietHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "http://example.invalid/" + self.path.lstrip("/"))
        self.end_headers()


@pytest.fixture(scope="module")
def serve():
    """serve(folder, handler=_QuietHandler) -> base URL of an HTTP server on 127.0.0.1."""
    servers = []

    def start(folder: Path, handler=_QuietHandler) -> str:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
        )
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def good_mirror(serve, shared_data_root, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("good")
    for name in mnist.MD5:
        shutil.copyfile(shared_data_root / "MNIST" / "raw" / name, folder / name)
    return serve(folder)


@pytest.fixture(scope="module")
def corrupt_mirror(serve, shared_data_root, tmp_path_factory) -> str:
    """Every file with one byte flipped."""
    folder = tmp_path_factory.mktemp("corrupt")
    for name in mnist.MD5:
        data = bytearray((shared_data_root / "MNIST" / "raw" / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
    return serve(folder)


@pytest.fixture
def dead_mirror() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_mnist_complete(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(mnist.MD5)
    for name, md5 in mnist.MD5.items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5


def test_download_from_loopback_then_keeps_verified_files(good_mirror, dead_mirror, tmp_path):
    folder = download("mnist", tmp_path, mirrors=[good_mirror], progress=False)
    assert folder == tmp_path / "MNIST" / "raw"
    assert_mnist_complete(folder)
    assert files_under(tmp_path) == sorted(folder.iterdir())
    # Files already present with the right MD5 are not fetched again.
    assert download("mnist", tmp_path, mirrors=[dead_mirror], progress=False) == folder
    assert_mnist_complete(folder)


def test_corrupt_mirror_is_rejected_leaving_nothing(corrupt_mirror, tmp_path):
    with pytest.raises(DataError) as err:
        download("mnist", tmp_path, mirrors=[corrupt_mirror], progress=False)
    message = str(err.value)
    assert "MD5 mismatch" in message and corrupt_mirror in message
    assert files_under(tmp_path) == []


def test_falls_back_to_the_next_mirror(corrupt_mirror, good_mirror, tmp_path, capsys):
    folder = download("mnist", tmp_path, mirrors=[corrupt_mirror, good_mirror.rstrip("/")])
    assert_mnist_complete(folder)
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar


def test_a_present_file_with_a_wrong_md5_is_replaced(good_mirror, tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"stale")
    download("mnist", tmp_path, mirrors=[good_mirror], progress=False)
    assert_mnist_complete(folder)


def test_unreachable_mirrors_are_listed(dead_mirror, good_mirror, tmp_path):
    missing = good_mirror + "nowhere/"
    with pytest.raises(DataError) as err:
        download("mnist", tmp_path, mirrors=[dead_mirror, missing], progress=False)
    message = str(err.value)
    assert dead_mirror in message and missing in message and "404" in message
    assert files_under(tmp_path) == []


def test_redirect_to_plain_http_is_refused(serve, tmp_path):
    redirecting = serve(tmp_path, _RedirectHandler)
    with pytest.raises(DataError, match="refusing redirect to non-https http://example.invalid/"):
        download("mnist", tmp_path / "root", mirrors=[redirecting], progress=False)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "mirror", ["http://example.com/mnist/", "ftp://127.0.0.1/mnist/", "http://10.0.0.1/"]
)
def test_non_https_non_loopback_mirror_is_refused(mirror, tmp_path):
    with pytest.raises(DataError, match="refusing mirror"):
        download("mnist", tmp_path, mirrors=[mirror], progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2", "[::1]"])
def test_plain_http_is_allowed_on_loopback_hosts(host, tmp_path):
    mirror = f"http://{host}:9/"  # the discard port: nothing listens, but it is not refused
    with pytest.raises(DataError, match="could not download") as err:
        download("mnist", tmp_path, mirrors=[mirror], progress=False)
    assert "refusing" not in str(err.value)


def test_unknown_dataset_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="mnist, cifar10"):
        download("synthetic", tmp_path)


def _cifar_archive(folder: Path) -> tuple[Path, dict[str, str]]:
    """A small archive in the publisher's layout plus hostile members; returns it and
    the MD5s of its batch files."""
    rng = np.random.default_rng(0)
    md5s, members = {}, {}
    for name in cifar10.MD5:
        batch = {b"labels": rng.integers(0, 10, 4).tolist(),
                 b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
        md5s[name] = hashlib.md5(members[f"cifar-10-batches-py/{name}"]).hexdigest()
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": []})
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    members["../evil.txt"] = b"escaped"
    members["cifar-10-batches-py/../../evil2.txt"] = b"escaped"
    archive = folder / cifar10.ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cifar-10-batches-py/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return archive, md5s


def test_cifar10_archive_is_verified_and_extracted_safely(serve, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    archive, md5s = _cifar_archive(served)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(cifar10, "MD5", md5s)
    root = tmp_path / "a" / "root"
    folder = download("cifar10", root, mirrors=[serve(served)], progress=False)
    assert folder == root / "cifar-10-batches-py"
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]  # archive deleted
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*md5s, "batches.meta", "readme.html"]
    )
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil2.txt").exists()
    train_x, _, test_x, _ = read_cifar10(root)  # verify=True against the patched MD5s
    assert train_x.shape == (20, 3, 32, 32) and test_x.shape == (4, 3, 32, 32)


def test_cifar10_corrupt_archive_is_rejected(serve, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    _cifar_archive(served)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="MD5 mismatch"):
        download("cifar10", root, mirrors=[serve(served)], progress=False)
    assert files_under(root) == []
