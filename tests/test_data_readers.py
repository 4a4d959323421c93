import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from afl.cli import main as cli_main
from afl.data import Dataset, generate_synthetic, load, read_cifar10, read_mnist, resolve_root, write_cifar10_standin
from afl.data import cifar10, mnist
from afl.errors import DataError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_ds(shared_data_root) -> Dataset:
    return load("mnist", shared_data_root)


# --- MNIST -------------------------------------------------------------------------------


def test_mnist_shapes_range_and_label_counts(mnist_ds):
    assert mnist_ds.name == "mnist" and mnist_ds.num_classes == 10
    assert mnist_ds.train_x.shape == (60000, 1, 28, 28)
    assert mnist_ds.test_x.shape == (10000, 1, 28, 28)
    assert mnist_ds.input_shape == (1, 28, 28)
    assert mnist_ds.train_x.dtype == torch.float32 and mnist_ds.train_y.dtype == torch.int64
    for x in (mnist_ds.train_x, mnist_ds.test_x):
        assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.bincount(mnist_ds.train_y).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist_ds.test_y).tolist() == TEST_COUNTS
    assert mnist_ds.client_indices is None


def test_mnist_normalisation_matches_pixels(mnist_ds, shared_data_root):
    train_x, _, _, _ = read_mnist(shared_data_root / "MNIST" / "raw")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    expected = (torch.from_numpy(train_x[:100].astype(np.float32)) / 255 - 0.5) / 0.5
    assert torch.equal(mnist_ds.train_x[:100, 0], expected)


def test_mnist_decompressed_copies_give_identical_tensors(mnist_ds, copy_mnist, tmp_path):
    raw = copy_mnist(tmp_path, decompress=True)
    assert not list(raw.glob("*.gz"))
    ds = load("mnist", tmp_path)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(ds, field), getattr(mnist_ds, field)), field


def test_mnist_prefers_gz_when_both_exist(copy_mnist, tmp_path):
    raw = copy_mnist(tmp_path)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    _, train_y, _, _ = read_mnist(raw)
    assert np.bincount(train_y).tolist() == TRAIN_COUNTS


def test_mnist_flipped_byte_fails_md5_naming_the_file(copy_mnist, tmp_path):
    raw = copy_mnist(tmp_path)
    path = raw / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        read_mnist(raw)
    message = str(err.value)
    assert str(path) in message and "MD5 mismatch" in message
    assert mnist.MD5[path.name] in message and "afl data download mnist" in message


def test_mnist_truncated_gz_is_rejected_with_and_without_verify(copy_mnist, tmp_path):
    raw = copy_mnist(tmp_path)
    path = raw / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="MD5 mismatch") as err:
        read_mnist(raw)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="not a valid gzip file") as err:
        read_mnist(raw, verify=False)
    assert str(path) in str(err.value)


def test_mnist_truncated_decompressed_copy_is_rejected(copy_mnist, tmp_path):
    raw = copy_mnist(tmp_path, decompress=True)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated") as err:
        read_mnist(raw)
    assert str(path) in str(err.value)


def test_mnist_wrong_magic_is_rejected(copy_mnist, tmp_path):
    raw = copy_mnist(tmp_path, decompress=True)
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    shutil.copyfile(labels, images)
    with pytest.raises(DataError, match="magic number 2049 \\(expected 2051\\)") as err:
        read_mnist(raw)
    assert str(images) in str(err.value)


def test_mnist_label_count_must_match_images(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        header = np.array([2051, 3, 28, 28], dtype=">u4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + bytes(3 * 28 * 28))
        labels = np.array([2049, 2], dtype=">u4").tobytes() + bytes([1, 2])
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(DataError, match="2 labels for 3 images"):
        read_mnist(raw)


def test_mnist_missing_folder_says_how_to_download(tmp_path):
    with pytest.raises(DataError) as err:
        load("mnist", tmp_path / "nowhere")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "afl data download mnist" in message and "AFL_DATA_ROOT" in message


def test_resolve_root_prefers_argument_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("AFL_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("AFL_DATA_ROOT")
    assert resolve_root(None) == Path("data")


def test_load_uses_afl_data_root(tmp_path, monkeypatch, shared_data_root):
    monkeypatch.setenv("AFL_DATA_ROOT", str(tmp_path / "env-root"))
    with pytest.raises(DataError, match="env-root"):
        load("mnist")
    monkeypatch.setenv("AFL_DATA_ROOT", str(shared_data_root))
    assert load("mnist", verify=False).train_x.shape == (60000, 1, 28, 28)


def test_load_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="mnist, cifar10, synthetic"):
        load("imagenet")


# --- CIFAR-10 ----------------------------------------------------------------------------

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar(root: Path, rows: int = 20, protocol: int = 2, seed: int = 0) -> dict:
    """Small CIFAR-10 batches in the publisher's format; returns {file: (data, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in CIFAR_FILES:
        data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, rows).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{i}.png".encode() for i in range(rows)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[name] = (data, labels)
    return batches


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_small_batches(tmp_path, protocol):
    batches = write_cifar(tmp_path, protocol=protocol)
    train_x, train_y, test_x, test_y = read_cifar10(tmp_path, verify=False)
    assert train_x.shape == (100, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (20, 3, 32, 32) and test_y.shape == (20,)
    data_3, labels_3 = batches["data_batch_3"]
    # channel-major rows: 1024 red, then green, then blue values, each 32x32 row-major
    assert np.array_equal(train_x[40 + 7, 1], data_3[7, 1024:2048].reshape(32, 32))
    assert train_y[40:60].tolist() == labels_3
    assert test_y.tolist() == batches["test_batch"][1]


def test_cifar10_load_normalises(tmp_path):
    batches = write_cifar(tmp_path)
    ds = load("cifar10", tmp_path, verify=False)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.input_shape == (3, 32, 32)
    assert ds.num_classes == 10 and ds.test_y.dtype == torch.int64
    pixels = torch.from_numpy(batches["test_batch"][0].astype(np.float32)).reshape(20, 3, 32, 32)
    assert torch.equal(ds.test_x, (pixels / 255 - 0.5) / 0.5)


def test_cifar10_verify_checks_md5(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DataError, match="MD5 mismatch") as err:
        read_cifar10(tmp_path)
    assert "data_batch_1" in str(err.value) and "afl data download cifar10" in str(err.value)


class _Shell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_cifar10_refuses_forbidden_globals(tmp_path, payload):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = _Shell(f"touch {marker}") if payload == "os.system" else _Eval()
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"labels": evil, b"data": np.zeros((1, 3072), np.uint8)}))
    with pytest.raises(DataError, match="refusing to unpickle") as err:
        read_cifar10(tmp_path, verify=False)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_cifar10_inconsistent_batch_is_rejected(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = {b"labels": [1, 2, 3], b"data": np.zeros((2, 3072), np.uint8)}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="3 labels for 2 images") as err:
        read_cifar10(tmp_path, verify=False)
    assert str(path) in str(err.value)
    path.write_bytes(pickle.dumps({b"labels": [1], b"data": np.zeros((1, 100), np.uint8)}))
    with pytest.raises(DataError, match="uint8 array"):
        read_cifar10(tmp_path, verify=False)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a CIFAR-10 pickle"):
        read_cifar10(tmp_path, verify=False)


def test_cifar10_missing_folder_says_how_to_download(tmp_path):
    with pytest.raises(DataError) as err:
        load("cifar10", tmp_path)
    assert "afl data download cifar10" in str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


# --- the CIFAR-10 stand-in (afl/data/standin.py) -----------------------------------------


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cifar10_standin_has_the_archive_layout_and_is_read_by_the_reader(tmp_path):
    folder = write_cifar10_standin(tmp_path, train=100, test=30, seed=0)
    assert folder == tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]  # no temporary left
    assert sorted(p.name for p in folder.iterdir()) == sorted(CIFAR_FILES + ["batches.meta", "readme.html"])
    for name in CIFAR_FILES:
        raw = (folder / name).read_bytes()
        assert raw[:2] == b"\x80\x02"  # protocol 2, as the publisher's Python 2 pickles
        batch = pickle.loads(raw, encoding="bytes")
        assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
        rows = 30 if name == "test_batch" else 20
        assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (rows, 3072)
        assert type(batch[b"labels"]) is list and all(type(v) is int for v in batch[b"labels"])
    meta = pickle.loads((folder / "batches.meta").read_bytes(), encoding="bytes")
    assert meta[b"num_vis"] == 3072 and meta[b"num_cases_per_batch"] == 20 and len(meta[b"label_names"]) == 10
    assert "not CIFAR-10" in (folder / "readme.html").read_text()

    ds = load("cifar10", tmp_path, verify=False)
    assert ds.name == "cifar10" and ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (30, 3, 32, 32)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert torch.bincount(ds.train_y).tolist() == [10] * 10
    assert torch.bincount(ds.test_y).tolist() == [3] * 10
    assert ds.train_x.min() == -1.0 and ds.train_x.max() == 1.0
    # The reader's channel-major decoding: a test image's green plane is its row's second 1024 values.
    test = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")[b"data"]
    green = (torch.from_numpy(test[7, 1024:2048].astype(np.float32)).reshape(32, 32) / 255 - 0.5) / 0.5
    assert torch.equal(ds.test_x[7, 1], green)


def test_cifar10_standin_classes_are_separable(tmp_path):
    """Learnable without any training: the nearest class mean of the training images labels most
    test images right (chance is 0.1); tests/test_pipeline_cifar10.py trains ResNet-20 on it."""
    write_cifar10_standin(tmp_path, train=1000, test=200, seed=1)
    ds = load("cifar10", tmp_path, verify=False)
    means = torch.stack([ds.train_x[ds.train_y == c].mean(0) for c in range(10)])
    dist = ((ds.test_x[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (dist.argmin(1) == ds.test_y).float().mean() > 0.6
    # ...but not trivially: images of one class differ (shifts, contrast, noise).
    first = ds.train_x[ds.train_y == 0]
    assert (first[1:] - first[0]).abs().mean() > 0.1


def test_cifar10_standin_is_the_same_bytes_for_the_same_seed(tmp_path):
    a = _folder_bytes(write_cifar10_standin(tmp_path / "a", train=50, test=10, seed=3))
    b = write_cifar10_standin(tmp_path / "b", train=50, test=10, seed=3)
    assert _folder_bytes(b) == a
    # Written again over itself: replaced by the same bytes; another seed: other images.
    assert _folder_bytes(write_cifar10_standin(tmp_path / "b", train=50, test=10, seed=3)) == a
    other = _folder_bytes(write_cifar10_standin(tmp_path / "b", train=50, test=10, seed=4))
    assert all(other[name] != a[name] for name in CIFAR_FILES)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["cifar-10-batches-py"]


def test_cifar10_standin_fails_the_publishers_md5(tmp_path):
    write_cifar10_standin(tmp_path, train=50, test=10)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with pytest.raises(DataError, match="MD5 mismatch") as err:
        load("cifar10", tmp_path)
    assert str(err.value).startswith(f"{path}: MD5 mismatch (expected {cifar10.MD5['data_batch_1']}, got ")


def test_cifar10_standin_never_replaces_real_or_foreign_files(tmp_path, monkeypatch):
    folder = write_cifar10_standin(tmp_path, train=50, test=10, seed=0)
    before = _folder_bytes(folder)
    # Pretend the test batch there is the publisher's: the folder now "holds the real CIFAR-10".
    real_md5 = hashlib.md5(before["test_batch"]).hexdigest()
    monkeypatch.setitem(cifar10.MD5, "test_batch", real_md5)
    with pytest.raises(DataError) as err:
        write_cifar10_standin(tmp_path, train=50, test=10, seed=1)
    assert str(err.value) == (
        f"{folder}: holds the real CIFAR-10 (test_batch has the publisher's MD5), refusing to overwrite it "
        "with a stand-in; fix: choose another --root")
    assert _folder_bytes(folder) == before
    monkeypatch.undo()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"holds files a stand-in does not write \(notes.txt\)"):
        write_cifar10_standin(tmp_path, train=50, test=10, seed=1)
    assert _folder_bytes(folder) == {**before, "notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_cli_data_standin_says_where_and_that_verify_must_be_off(tmp_path, capsys):
    assert cli_main(["data", "standin", "cifar10", "--root", str(tmp_path), "--train", "20", "--test", "10",
                     "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and str(tmp_path / "cifar-10-batches-py") in out and "data.verify: false" in out
    assert _folder_bytes(tmp_path / "cifar-10-batches-py") == _folder_bytes(
        write_cifar10_standin(tmp_path / "api", train=20, test=10, seed=2))
    (tmp_path / "cifar-10-batches-py" / "x").write_text("")
    assert cli_main(["data", "standin", "cifar10", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"afl: error: {tmp_path / 'cifar-10-batches-py'}: holds files")
    with pytest.raises(SystemExit) as exc:
        cli_main(["data", "standin", "cifar10", "--root", str(tmp_path), "--train", "4"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "afl data standin: error: argument --train: 4 is below 5; fix: see `afl data standin --help`\n")


# --- Synthetic ---------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    a, b = generate_synthetic(8, 1.0, 1.0, seed=3), generate_synthetic(8, 1.0, 1.0, seed=3)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert all(np.array_equal(p, q) for p, q in zip(a.client_indices, b.client_indices))
    c = generate_synthetic(8, 1.0, 1.0, seed=4)
    assert c.train_x.shape != a.train_x.shape or not torch.equal(c.train_x, a.train_x)


def test_synthetic_shapes_and_natural_partition():
    ds = generate_synthetic(12, 0.5, 0.5, seed=0)
    n = len(ds.train_y)
    assert ds.name == "synthetic" and ds.num_classes == 10 and ds.input_shape == (60,)
    assert ds.train_x.shape == (n, 60) and ds.train_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64 and ds.test_x.shape[1] == 60
    assert 0 <= ds.train_y.min() and ds.train_y.max() < 10
    assert 0.75 < n / (n + len(ds.test_y)) <= 0.8
    assert len(ds.client_indices) == 12
    assert all(p.dtype == np.int64 and len(p) >= 40 for p in ds.client_indices)
    assert np.array_equal(np.sort(np.concatenate(ds.client_indices)), np.arange(n))


def test_synthetic_client_data_does_not_depend_on_num_clients():
    small, large = generate_synthetic(3, 1.0, 1.0, seed=5), generate_synthetic(6, 1.0, 1.0, seed=5)
    n = len(small.train_y)
    assert torch.equal(small.train_x, large.train_x[:n])
    assert all(np.array_equal(p, q) for p, q in zip(small.client_indices, large.client_indices))


def test_synthetic_via_load():
    ds = load("synthetic", num_clients=4, seed=2, synthetic_alpha=0.0, synthetic_beta=0.0)
    assert torch.equal(ds.train_x, generate_synthetic(4, 0.0, 0.0, seed=2).train_x)
