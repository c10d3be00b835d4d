"""Files on disk, shared by training and evaluation: atomic writers (temporary file in the
same folder, ``fsync``, ``os.replace``: a crash leaves the old file or the new one, never a
torn one), weights-only checkpoint reads, JSON reads and the run-folder layout."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import tempfile


TMP_PREFIX = ".tmp_"  # temporaries of the atomic writers: TMP_PREFIX + random + file name


@contextlib.contextmanager
def atomic_destination(path: str):
    """A temporary path in ``path``'s folder, for writers that only take a path (ONNX
    export, ...): when the block completes it is fsynced, given a new file's permissions
    and ``os.replace``-d onto ``path``; when the block raises it is removed. A folder that
    cannot be written raises the ``OSError`` naming ``path``, not the temporary."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.basename(path), dir=folder)
    except OSError as exc:
        if exc.errno is None or isinstance(exc, FileExistsError):
            raise
        raise OSError(exc.errno, exc.strerror, path) from exc
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _atomic_replace(path: str, write) -> None:
    """Write ``path`` through ``write(file)`` on a temporary file (:func:`atomic_destination`)."""
    with atomic_destination(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def _fsync_dir(folder: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    import torch

    _atomic_replace(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str, text: str) -> None:
    _atomic_replace(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_bytes(path: str, data: bytes) -> None:
    _atomic_replace(path, lambda fh: fh.write(data))


def csv_row(row: dict) -> dict:
    """``row`` with its floats written to 6 significant digits (the project's CSV cells)."""
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}


def atomic_write_csv(path: str, fields, rows) -> None:
    """Write a whole CSV (header + ``rows`` as dicts, floats via :func:`csv_row`; extra
    keys ignored) atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, list(fields), extrasaction="ignore")
    w.writeheader()
    w.writerows(map(csv_row, rows))
    atomic_write_text(path, buf.getvalue())


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the temporaries a killed atomic write left in ``folder`` (files named
    ``TMP_PREFIX*``; only call this while no writer of that folder runs). Returns them."""
    if not os.path.isdir(folder):
        return []
    stale = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
             if f.startswith(TMP_PREFIX) and os.path.isfile(os.path.join(folder, f))]
    for path in stale:
        os.unlink(path)
    return stale


# What a file that is not a readable checkpoint is, from its first bytes: torch.save
# writes a zip archive (``PK``) or, in the legacy format, a pickle (protocol byte 0x80).
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")
CHECKPOINT_ADVICE = "pass a best.pt or last.pt written by ggnet train"


def _unreadable_reason(path: str, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in the project's words (never
    torch's, whose weights-only message advises unsafe loading)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "it is empty (truncated)"
    if not head.startswith(CHECKPOINT_MAGIC):
        return f"it is not a PyTorch checkpoint (it starts with {head!r})"
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
        return ("it holds Python objects other than tensors and plain containers, which "
                "are never loaded")
    return f"it is truncated or corrupt ({type(exc).__name__})"


def load_checkpoint(path: str, map_location="cpu", advice: str = CHECKPOINT_ADVICE) -> dict:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only. A file
    that is not a readable checkpoint (empty, truncated, an image, a pickle of other
    objects) raises ``ValueError`` naming it, why, and ``advice``."""
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as exc:
        raise ValueError(f"checkpoint {path} ({os.path.getsize(path)} bytes) is not readable: "
                         f"{_unreadable_reason(path, exc)}; {advice}") from None
    if not isinstance(ck, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ck).__name__}, not a checkpoint "
                         f"dict; {advice}")
    return ck


def read_json(path: str):
    """The JSON value in ``path``, or ``None`` if the file is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


RUN_CONFIG = "config.json"
#: In the parent of ``--fold all`` runs: the folds to train and their configuration.
FOLD_PLAN = "folds.json"


def fold_folder(parent: str, fold: int) -> str:
    """Where fold ``fold`` of a ``--fold all`` run under ``parent`` lives."""
    return os.path.join(parent, f"fold{fold}")


def unstarted_folds(root: str) -> dict[int, str]:
    """``{fold: folder}`` of the folds ``root``'s fold plan lists whose folder holds no run
    configuration yet (a ``--fold all`` training stopped before reaching them)."""
    plan = read_json(os.path.join(root, FOLD_PLAN))
    if not isinstance(plan, dict):
        return {}
    folders = {int(k): fold_folder(root, k) for k in plan.get("folds", [])}
    return {k: f for k, f in folders.items()
            if not os.path.isfile(os.path.join(f, RUN_CONFIG))}


def read_run_config(run_dir: str) -> dict:
    """The configuration a training run saved (``run_dir/config.json``, or that file's
    path itself) as a dict: ``FileNotFoundError`` when it is missing, ``ValueError`` when
    it is not a JSON object. The one reader of a run's configuration."""
    path = run_dir if run_dir.endswith(".json") else os.path.join(run_dir, RUN_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no run configuration {path}")
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a readable run configuration (a JSON object)")
    return saved


def run_folders(root: str) -> list[str]:
    """The run folders under ``root``: ``[root]`` if it holds ``config.json`` (one run),
    else its sub-folders that do (``fold0/``, ``fold1/``... of ``--fold all``), sorted."""
    if os.path.isfile(os.path.join(root, "config.json")):
        return [root]
    subs = (sorted(d for d in os.listdir(root)
                   if os.path.isfile(os.path.join(root, d, "config.json")))
            if os.path.isdir(root) else [])
    if not subs:
        raise FileNotFoundError(f"{root} holds neither config.json nor run folders with one")
    return [os.path.join(root, d) for d in subs]
