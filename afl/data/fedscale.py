"""FedScale's client availability trace as an afl availability trace (``afl data fedscale-trace``).

FedScale (Lai et al. 2022) drives its simulation with ``client_behave_trace``, a pickled mapping
from client id to ``{'duration': INT, 'inactive': [INT], 'finish_time': INT, 'active': [INT],
'model': STRING}`` (FedScale's "Device Trace File Formats" page). Its simulator reads client
``i`` as online in ``[active[j], inactive[j])`` of each cycle of ``finish_time`` seconds (the
time taken modulo ``finish_time``). ``convert`` writes those windows, repeated up to a horizon,
as the CSV ``client,start,end`` of ``timing.availability.kind: trace``, for the first clients by
id, in virtual time units of ``scale`` seconds.

The pickle is read with an unpickler that builds plain data only (dicts, lists, numbers,
strings) and refuses any other object, so a crafted file cannot run code.
"""

from __future__ import annotations

import csv
import io
import pickle
from pathlib import Path

from afl.atomic import write_bytes
from afl.errors import AflError


class _PlainData(pickle.Unpickler):
    def find_class(self, module, name):
        raise AflError(f"the trace holds a {module}.{name} object, not plain data; fix: give FedScale's "
                       "client_behave_trace (a dict of dicts of lists of numbers)")


def read_behaviour_trace(path: Path) -> dict:
    """The FedScale trace at ``path``: client id -> its record (plain data only)."""
    try:
        with Path(path).open("rb") as fh:
            trace = _PlainData(fh).load()
    except OSError as exc:
        raise AflError(f"{path}: cannot read ({exc.strerror}); fix: give FedScale's client_behave_trace file") from None
    except AflError as exc:
        raise AflError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
        raise AflError(f"{path}: not a pickle; fix: give FedScale's client_behave_trace file") from None
    if not isinstance(trace, dict):
        raise AflError(f"{path}: holds a {type(trace).__name__}, not a mapping of clients; "
                       "fix: give FedScale's client_behave_trace file")
    return trace


def windows(record: dict, horizon: float, scale: float) -> list[tuple[float, float]]:
    """A client's online windows ``[active[j], inactive[j])`` of every cycle of ``finish_time`` that
    starts before ``horizon`` (in afl's time: seconds / ``scale``), cut at the horizon."""
    active, inactive, cycle = record["active"], record["inactive"], float(record["finish_time"])
    if len(active) != len(inactive) or cycle <= 0:
        raise ValueError("active and inactive differ in length, or finish_time is not positive")
    out, k = [], 0
    while k * cycle / scale < horizon:
        for start, end in zip(active, inactive):
            a, b = (k * cycle + float(start)) / scale, min((k * cycle + float(end)) / scale, horizon)
            if a < b:
                out.append((a, b))
        k += 1
    return out


def convert(path: Path, out: Path, clients: int, horizon: float, scale: float = 1.0) -> int:
    """Write the first ``clients`` clients' windows (by sorted id, renumbered 0..clients-1) up to
    ``horizon`` as a ``client,start,end`` CSV at ``out``, atomically; how many windows."""
    trace = read_behaviour_trace(path)
    ids = sorted(trace)[:clients]
    if len(ids) < clients:
        raise AflError(f"{path}: holds {len(ids)} clients, not {clients}; fix: ask for at most {len(ids)}")
    text, rows = io.StringIO(), 0
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("client", "start", "end"))
    for client, key in enumerate(ids):
        try:
            for start, end in windows(trace[key], horizon, scale):
                writer.writerow((client, repr(start), repr(end)))
                rows += 1
        except (KeyError, TypeError, ValueError) as exc:
            raise AflError(f"{path}: client {key!r} is not a FedScale record ({exc}); fix: give FedScale's "
                           "client_behave_trace file") from None
    write_bytes(text.getvalue().encode(), Path(out))
    return rows
