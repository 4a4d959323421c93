"""``afl validate`` reads every file a config names, as a run would, before any data is loaded:
rate, speed and availability traces and routing files, with the run's one-line messages; a file
of any content (binary, not UTF-8, empty) is one line, never a traceback (issue 24)."""

import random

import pytest

from afl.cli import main

BINARY = bytes(range(256)) * 4
NOT_UTF8 = "client,rate\n0,1\n".encode() + b"\xff\xfe\n"


def config_with(tmp_path, section: str, content):
    """A config naming ``tmp_path/file`` in ``section`` (the file written with ``content`` if given)."""
    path = tmp_path / "file"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    timing, algorithm = {}, {"name": "fedasync", "concurrency": 2}
    if section == "timing.rates.path":
        timing = {"rates": {"kind": "trace", "path": str(path)}}
    elif section == "timing.modulation.path":
        timing = {"modulation": {"kind": "trace", "path": str(path)}}
    elif section == "timing.availability.path":
        timing = {"availability": {"kind": "trace", "path": str(path)}}
    else:
        algorithm = {"name": "asyncsgd", "concurrency": 2, "routing": str(path)}
    config = tmp_path / "config.yaml"
    import yaml

    config.write_text(yaml.safe_dump({"data": {"num_clients": 3}, "algorithm": algorithm, "timing": timing,
                                      "run": {"workload": "none", "updates": 10}}))
    return config


GOOD = {"timing.rates.path": "client,rate\n0,1\n1,2\n2,3\n",
        "timing.modulation.path": "client,time,rate\n0,0,1\n1,0,1\n2,0,1\n",
        "timing.availability.path": "client,start,end\n0,0,5\n1,1,2\n",
        "algorithm.routing": '{"p": [0.2, 0.3, 0.5]}'}
BAD = {"timing.rates.path": ("client,rate\n0,1\n1,-2\n2,3\n", "line 3: client must be in 0..2 and rate > 0"),
       "timing.modulation.path": ("client,time,rate\n0,0,1\n1,0,1\n2,5,1\n", "no rate of client 2 at time 0"),
       "timing.availability.path": ("client,start,end\n0,5,1\n", "line 2: client must be in 0..2 and 0 <= start < end"),
       "algorithm.routing": ('{"p": [0.5, 0.5]}', "has 2 entries for 3 clients")}


def validate(capsys, config) -> tuple[int, list[str]]:
    code = main(["validate", str(config)])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("key", list(GOOD))
def test_validate_reads_each_referenced_file_with_the_run_s_message(tmp_path, capsys, key):
    assert main(["validate", str(config_with(tmp_path, key, GOOD[key]))]) == 0
    capsys.readouterr()
    content, words = BAD[key]
    code, err = validate(capsys, config_with(tmp_path, key, content))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"afl: error: {key}") and words in err[0], err
    assert "fix:" in err[0]


@pytest.mark.parametrize("key", list(GOOD))
@pytest.mark.parametrize("content, words", [(None, "cannot read"), (BINARY, ""), (NOT_UTF8, ""), ("", "")])
def test_a_referenced_file_of_any_content_is_one_line(tmp_path, capsys, key, content, words):
    code, err = validate(capsys, config_with(tmp_path, key, content))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"afl: error: {key}") and words in err[0], err
    assert "fix:" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("content", [BINARY, random.Random(0).randbytes(2000), b"\xff\xfe\x00seed: 1\n", b"seed: \x00\n"])
@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_config_file_of_random_bytes_is_one_line(tmp_path, capsys, content, command):
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    out = tmp_path / "out"
    code = main([command, str(config)] + (["--out", str(out)] if command == "train" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"afl: error: {config}") and "fix:" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("key", list(GOOD))
def test_a_huge_referenced_file_is_one_line_without_reading_it(tmp_path, capsys, key):
    """A file past its limit (a sparse file here: nothing is written, and nothing must be read) is the
    wrong file: one line with its size, before any parsing."""
    from afl.errors import MAX_CONFIG_BYTES, MAX_TRACE_BYTES

    config = config_with(tmp_path, key, GOOD[key])
    limit = MAX_CONFIG_BYTES if key == "algorithm.routing" else MAX_TRACE_BYTES
    with open(tmp_path / "file", "r+b") as fh:
        fh.truncate(limit + 1)
    code, err = validate(capsys, config)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"afl: error: {key}"), err
    assert f"more than the {limit // 2**20} MiB" in err[0] and "fix:" in err[0]
    with open(tmp_path / "file", "r+b") as fh:  # at the limit it is read (and parsed: the NUL bytes are not text)
        fh.truncate(limit)
    code, err = validate(capsys, config)
    assert code == 2 and len(err) == 1 and "MiB" not in err[0], err


def test_a_huge_config_file_is_one_line(tmp_path, capsys):
    from afl.errors import MAX_CONFIG_BYTES

    config = tmp_path / "config.yaml"
    with open(config, "wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)
    code, err = validate(capsys, config)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"afl: error: {config}: ") and "MiB" in err[0], err
