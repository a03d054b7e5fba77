"""Which source a data set is loaded from: ``--hub``, the standard files, a local Hugging Face
dataset, or the default hub repository; each load is memoized in the process."""

from __future__ import annotations

from typing import Callable

from .errors import DataSourceError
from .hf import HUB_REPOS, load_default_hub, load_hub, load_local_dataset, local_dataset_files, \
    local_dataset_kind, parse_hub
from .memo import memoized
from .sources import FILES, candidate_dirs, has_files, not_found, stat_key

__all__ = ["load_from_sources"]


def load_from_sources(name: str, data_dir, hub: str | None, from_files: Callable, from_dataset_dict: Callable):
    """``from_files(folder)`` or ``from_dataset_dict(raw, source)`` of the first source that has ``name``.

    In order: the pinned hub repository ``hub``; the standard files in any candidate folder
    (:func:`benchmark.data.sources.candidate_dirs`); a save_to_disk or parquet folder among them;
    the default hub repository. DataNotFoundError says what was looked for where.
    """
    if hub is not None:
        if data_dir is not None:
            raise DataSourceError("give a data folder (--data-dir) or a hub repository (--hub), not both")
        repo, revision = parse_hub(hub)
        return memoized((name, "hub", repo, revision), lambda: from_dataset_dict(*load_hub(hub)))
    dirs = candidate_dirs(name, data_dir)
    # The standard files first, in every folder: a parent folder's datasets never shadow them.
    for folder in dirs:
        if has_files(name, folder):
            folder = folder.resolve()
            return memoized((name, stat_key([folder / f for f in FILES[name]])), lambda: from_files(folder))
    for folder in dirs:
        kind = local_dataset_kind(folder)
        if kind is not None:
            folder = folder.resolve()
            key = (name, kind, stat_key(local_dataset_files(folder, kind)))
            return memoized(key, lambda: from_dataset_dict(*load_local_dataset(folder, kind)))
    try:
        return memoized((name, "hub"), lambda: from_dataset_dict(*load_default_hub(name)))
    except Exception as e:  # offline, no connection, repo layout changed, ...
        raise not_found(name, dirs, HUB_REPOS[name], f"{type(e).__name__}: {e}".splitlines()[0][:300]) from e
