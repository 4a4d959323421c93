"""The command line: ``afl train | validate | launch | plan | data download | data standin | data
fedscale-trace | queue predict | queue optimize | queue optimal``.

Any ``AflError`` (bad config, missing data, unwritable output) is printed as one line,
``afl: error: <key or file>: <problem>; fix: <fix>``, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from afl.errors import AflError

# Each command imports what it needs when it runs, not at the top: `afl --help`, `afl validate` and
# `afl launch` (on a login node) then start without loading torch.


def _load(args):
    from afl.config import load_config

    return load_config(args.config, args.set or [])


def cmd_train(args) -> int:
    from afl.run.train import train

    cfg = _load(args)
    info = train(cfg, Path(args.out), progress=not args.quiet, restart=args.restart)
    if info.get("skipped"):
        print(f"already completed: {args.out} holds this config's results (use --restart to run it again)")
        return 0
    acc = info["final_test_acc"]
    acc_text = f", test accuracy {acc:.4f}" if acc is not None else ""
    print(f"{info['status']}: {info['updates']} updates in {info['wall_time']:.1f} s "
          f"({info['updates_per_second']:.1f} updates/s), virtual time {info['virtual_time']:.4g}"
          f"{acc_text} -> {args.out}")
    return 0 if info["status"] == "completed" else 1


def cmd_validate(args) -> int:
    from afl.config import config_hash

    cfg = _load(args)
    print(f"ok: {args.config} is valid (config hash {config_hash(cfg)})")
    return 0


def cmd_data_download(args) -> int:
    from afl.data import download, resolve_root

    root = resolve_root(args.root)
    path = download(args.name, root, mirrors=args.mirror or None, progress=not args.quiet)
    print(f"{args.name}: verified under {path}")
    return 0


def cmd_data_standin(args) -> int:
    from afl.data.standin import write_cifar10_standin

    path = write_cifar10_standin(args.root, train=args.train, test=args.test, seed=args.seed)
    print(f"{args.name} stand-in (generated, not CIFAR-10): {args.train} training and {args.test} test "
          f"images written to {path}; runs on it must set data.verify: false")
    return 0


def cmd_data_fedscale_trace(args) -> int:
    from afl.data.fedscale import convert

    rows = convert(Path(args.trace), Path(args.out), args.clients, args.horizon, args.scale)
    print(f"{args.trace}: {rows} online windows of {args.clients} clients up to time {args.horizon:g} -> {args.out} "
          f"(timing.availability: {{kind: trace, path: {args.out}}})")
    return 0


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a positive finite number")
    return value


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low`` (a usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    return parse


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors in the house format too: one line, the fix, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; fix: see `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="afl", description="Asynchronous federated learning in virtual time.")
    sub = p.add_subparsers(dest="command", required=True)

    def config_args(sp):
        sp.add_argument("config", help="YAML run config")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a key, e.g. --set algorithm.concurrency=8 (repeatable)")

    t = sub.add_parser("train", help="run one simulation and write its metrics")
    config_args(t)
    t.add_argument("--out", required=True, help="output folder for the Parquet tables and run.json")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--restart", action="store_true",
                   help="ignore a checkpoint or finished results in --out and start from scratch")
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("validate", help="check a config without running it")
    config_args(v)
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("download", help="download and verify a dataset")
    dl.add_argument("name", choices=("mnist", "cifar10"))
    dl.add_argument("--root", help="dataset root (default: $AFL_DATA_ROOT, else ./data)")
    dl.add_argument("--mirror", action="append", help="base URL to try instead of the defaults (repeatable)")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(func=cmd_data_download)
    st = dsub.add_parser("standin", help="write a generated stand-in dataset in the real one's file format "
                                         "(not the real data: read it with data.verify: false)")
    st.add_argument("name", choices=("cifar10",))
    st.add_argument("--root", required=True,
                    help="dataset root to write <root>/cifar-10-batches-py into (never the real CIFAR-10's)")
    st.add_argument("--train", type=_int_at_least(5), default=5000,
                    help="training images, split over the five data batches (default 5000)")
    st.add_argument("--test", type=_int_at_least(1), default=1000, help="test images (default 1000)")
    st.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the patterns and images (default 0)")
    st.set_defaults(func=cmd_data_standin)
    fs = dsub.add_parser("fedscale-trace", help="convert FedScale's client availability trace (client_behave_trace) "
                                                "into a timing.availability trace CSV")
    fs.add_argument("trace", help="FedScale's client_behave_trace (a pickle of plain data; nothing else is loaded)")
    fs.add_argument("--out", required=True, help="the CSV to write (client,start,end)")
    fs.add_argument("--clients", type=_int_at_least(1), required=True, help="the first this many clients by id")
    fs.add_argument("--horizon", type=_positive_float, required=True,
                    help="repeat each client's cycle up to this virtual time")
    fs.add_argument("--scale", type=_positive_float, default=1.0,
                    help="seconds of the trace per unit of virtual time (default 1)")
    fs.set_defaults(func=cmd_data_fedscale_trace)

    from afl.cluster import launch, plan
    from afl.queueing import cli as queue_cli

    queue_cli.add_parser(sub, config_args)
    launch.add_parser(sub, config_args)
    plan.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except AflError as exc:
        print(f"afl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("afl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
