"""Opening a dataset folder: the one way cai's commands read an export.

A cai export (`cai data pairs`, `cai data import`, `cai data split`) keeps its
DatasetDict in `hf/`; a DatasetDict saved with `save_to_disk` is accepted as well.
Training, `cai eval rm`, `cai data split` and the held-out eval prompts all read
through here, so they agree on what a dataset is and fail with the same lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.errors import CaiError

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def open_dataset(data: str | Path) -> tuple[Any, Path]:
    """The folder's DatasetDict and the folder itself."""
    import datasets

    path = Path(data).expanduser()
    if not path.exists():
        raise CaiError(f"{data}: dataset not found "
                       "(expected the folder `cai data pairs RUN` writes, e.g. runs/NAME/dataset)")
    for folder in (path / "hf", path):
        if (folder / "dataset_dict.json").is_file():
            datasets.disable_progress_bars()
            try:
                return datasets.load_from_disk(str(folder)), path
            except (OSError, ValueError) as err:
                raise CaiError(f"{folder}: cannot load the dataset: {str(err).splitlines()[0]}") from None
    raise CaiError(f"{data}: not a cai dataset (no hf/dataset_dict.json); export one with `cai data pairs RUN`")


def split_of(data: str | Path, split: str, *, columns: tuple[str, ...] = (), hint: str = "") -> Any:
    """One split of the folder, checked to exist and to have `columns`; `hint` ends the no-such-split line."""
    dd, _ = open_dataset(data)
    if split not in dd:
        raise CaiError(f"{data}: no split {split!r} (it has: {', '.join(dd)}){hint}")
    missing = [c for c in columns if c not in dd[split].column_names]
    if missing:
        raise CaiError(f"{data}: split {split!r} lacks {', '.join(missing)}")
    return dd[split]


def read_splits(data: str | Path, names: tuple[str, ...]) -> dict[str, list[dict]]:
    """The rows of each of `names` the folder has, every column kept."""
    dd, _ = open_dataset(data)
    return {name: [dict(row) for row in dd[name]] for name in names if name in dd}
