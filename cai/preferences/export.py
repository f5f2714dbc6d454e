"""Export kept pairs as a Hugging Face DatasetDict that TRL trains on as it is.

Splits are made by prompt, never by row, so no prompt of the test split is
seen in training. Alongside `save_to_disk` the same rows are written as
parquet and JSONL, with a dataset card that says what the data is and what
was dropped on the way.

`datasets.load_dataset(DIR)` reads the parquet files the card's `configs:` names,
and caches them by those names: a file rewritten under the same name comes back
stale from the cache. So each parquet file is named by a fingerprint of its
content (`data/train_prefs-<sha256[:12]>.parquet`): a new export can never hit an
old cache entry. A split with no rows gets no parquet file and is left out of
`configs:`, since datasets cannot load a 0-row split; `hf/` (load_from_disk)
and the JSONL files hold all four splits whatever their size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
from collections import Counter
from pathlib import Path

from cai.errors import CaiError
from cai.text import normalize

SPLITS = ("train_prefs", "test_prefs", "train_sft", "test_sft")
VALIDATION_SPLITS = ("validation_prefs", "validation_sft")      # written when a validation share is asked for
DROPPED = "dropped.jsonl"
DATA_DIR = "data"               # the parquet files the card's `configs:` names
SFT_COLUMNS = ("generation_id", "messages", "category", "principle_ids", "model")
TEST_PROMPT_IN_TRAIN = "prompt also in the test split"


EMPTY_PREF = {
    "pair_id": "", "generation_id": "", "prompt": [{"role": "user", "content": ""}],
    "chosen": [{"role": "assistant", "content": ""}], "rejected": [{"role": "assistant", "content": ""}],
    "messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
    "category": "", "source": "", "strategy": "", "principle_ids": [""], "model": "",
}


def prompt_key(row: dict) -> str:
    """What makes two rows the same prompt for the splits: its first turn, normalized."""
    return normalize(row["prompt"][0]["content"])


def drop_leaks(train: list[dict], test_prompts: set[str]) -> tuple[list[dict], list[dict]]:
    """(kept, leaked): train rows whose prompt is not / is one of `test_prompts` (prompt keys)."""
    kept, leaked = [], []
    for r in train:
        (leaked if prompt_key(r) in test_prompts else kept).append(r)
    return kept, leaked


def _shuffled_keys(rows: list[dict], seed) -> list[str]:
    """The rows' distinct prompt keys in a seeded order that does not depend on the row order."""
    return sorted({prompt_key(r) for r in rows}, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())


def split_by_prompt(rows: list[dict], test_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded prompt-level split; at least one prompt in test whenever there are two or more."""
    if not 0 <= test_share < 1:
        raise CaiError(f"--test-share: must be in [0, 1), got {test_share}")
    keys = _shuffled_keys(rows, seed)
    n_test = 0 if len(keys) < 2 else min(len(keys) - 1, max(1, round(test_share * len(keys))))
    test_keys = set(keys[:n_test])
    train, test = drop_leaks(rows, test_keys)
    return train, test


def split_validation(train: list[dict], share: float, seed: int, *, of: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): `share` of `of` prompts (all the dataset's, test included) moved out of train, by prompt.

    Drawn in another seeded order than the test split, from train rows only, so the
    three splits share no prompt; at least one prompt stays in train.
    """
    if not 0 <= share < 1:
        raise CaiError(f"--validation-share: must be in [0, 1), got {share}")
    keys = _shuffled_keys(train, f"validation:{seed}")
    n_validation = 0 if share == 0 or len(keys) < 2 else min(len(keys) - 1, max(1, round(share * of)))
    return drop_leaks(train, set(keys[:n_validation]))


def split_by_ids(rows: list[dict], test_ids: set[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, test, leaked): rows of the generations in `test_ids` are the test split, as a source set them.

    A train row whose prompt is also a test prompt is `leaked` (dropped by the
    caller), so the test split stays unseen in training whatever the source did.
    """
    test = [r for r in rows if r["generation_id"] in test_ids]
    train, leaked = drop_leaks([r for r in rows if r["generation_id"] not in test_ids], {prompt_key(r) for r in test})
    return train, test, leaked


def leaked_count(rows: list[dict], counts: dict) -> int:
    """How many of `rows` write_dataset dropped because their prompt is in the source's test split."""
    return len(rows) - counts["train_prefs"] - counts["test_prefs"]


def sft_rows(pref_rows: list[dict]) -> list[dict]:
    """One SFT row per generation: the most revised chosen text (the SL-CAI stage)."""
    last: dict[str, dict] = {}
    for row in pref_rows:
        last[row["generation_id"]] = row
    return [{k: row[k] for k in SFT_COLUMNS} for row in last.values()]


def _score_summary(rows: list[dict]) -> dict:
    columns = sorted({k for r in rows for k, v in r.items()
                      if isinstance(v, float) and not isinstance(v, bool)
                      and k.endswith(("toxicity", "bias", "label", "preference"))})
    out = {}
    for col in columns:
        values = sorted(r[col] for r in rows if isinstance(r.get(col), float))
        if values:
            out[col] = {"mean": round(statistics.fmean(values), 4),
                        "p50": round(values[len(values) // 2], 4),
                        "p90": round(values[min(len(values) - 1, int(len(values) * 0.9))], 4),
                        "max": round(values[-1], 4)}
    return out


def write_dataset(rows: list[dict], out_dir: str | Path, *, test_share: float = 0.1, seed: int = 0,
                  meta: dict | None = None, dropped_rows: list[dict] | None = None,
                  test_ids: set[str] | None = None, validation_share: float = 0.0) -> dict:
    """Write `rows` to `out_dir` (replaced atomically) and return the split counts.

    `dropped_rows` (each with `drop_reason` and `drop_detail`) go to `dropped.jsonl`,
    outside the splits, for audits and re-thresholding. `test_ids` (generation ids)
    keeps a source's own test split instead of splitting by prompt here.
    `validation_share` > 0 also writes `validation_prefs` and `validation_sft`: that
    share of the prompts, taken from train (for choosing settings without the test split).
    """
    import datasets
    from datasets import Dataset, DatasetDict

    datasets.disable_progress_bars()
    meta = meta or {}
    if test_ids is None:
        train, test = split_by_prompt(rows, test_share, seed)
    else:
        train, test, leaked = split_by_ids(rows, test_ids)
        meta = {**meta, "split_note": "The test split is the source's own; a train row whose prompt is also a test\n"
                                      f"prompt is dropped ({TEST_PROMPT_IN_TRAIN!r}), so no test prompt appears "
                                      "in training."}
        if leaked:
            meta = {**meta, "dropped": {**meta.get("dropped", {}), TEST_PROMPT_IN_TRAIN: len(leaked)}}
            dropped_rows = (dropped_rows or []) + [{**r, "drop_reason": TEST_PROMPT_IN_TRAIN, "drop_detail": ""}
                                                   for r in leaked]
        rows = train + test
    splits = {"train_prefs": train, "test_prefs": test}
    if validation_share:
        train, splits["validation_prefs"] = split_validation(train, validation_share, seed,
                                                             of=len({prompt_key(r) for r in rows}))
        splits["train_prefs"] = train
    splits.update({f"{name}_sft": sft_rows(splits[f"{name}_prefs"]) for name in ("train", "test", "validation")
                   if f"{name}_prefs" in splits})
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    # An empty split still needs the columns of its kind so TRL and users can load it.
    shape = {"prefs": (splits["train_prefs"] or splits["test_prefs"] or [EMPTY_PREF])[0],
             "sft": (splits["train_sft"] or splits["test_sft"] or [sft_rows([EMPTY_PREF])[0]])[0]}
    def empty(kind: str) -> Dataset:
        features = Dataset.from_list([shape[kind]]).features
        return Dataset.from_dict({column: [] for column in features}, features=features)

    dd = DatasetDict({name: Dataset.from_list(data) if data else empty(name.split("_")[1])
                      for name, data in splits.items()})
    # One shard per split: an empty split saved with the default sharding cannot be loaded back.
    dd.save_to_disk(str(tmp / "hf"), num_shards={name: 1 for name in dd})
    files = {}
    for name, ds in dd.items():
        if len(ds):
            files[name] = _write_parquet(ds, tmp, name)
        with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in splits[name]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if dropped_rows is not None:
        with open(tmp / DROPPED, "w", encoding="utf-8") as fh:
            for row in dropped_rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {name: len(data) for name, data in splits.items()}
    (tmp / "README.md").write_text(dataset_card(rows, counts, meta, files), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return counts


def _write_parquet(ds, folder: Path, split: str) -> str:
    """Write `ds` to DATA_DIR/<split>-<fingerprint>.parquet in `folder`; the path relative to `folder`."""
    path = folder / DATA_DIR / f"{split}.parquet"
    path.parent.mkdir(exist_ok=True)
    ds.to_parquet(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return path.rename(path.with_name(f"{split}-{digest}.parquet")).relative_to(folder).as_posix()


def empty_splits_note(counts: dict) -> str | None:
    """One line on why `load_dataset` will not show the empty splits, or None when none is empty."""
    empty = [name for name in SPLITS if not counts.get(name)]
    if not empty:
        return None
    if len(empty) == len(SPLITS):
        return ("no rows in any split: datasets.load_dataset cannot load a 0-row split, so it will find no data "
                "files here; load_from_disk(DIR/hf) gives the four splits, empty")
    return (f"empty: {', '.join(empty)} (datasets.load_dataset cannot load a 0-row split, so the card's configs: "
            "lists only the others; load_from_disk(DIR/hf) has all four)")


def data_files(front: dict) -> dict[str, str]:
    """{split: parquet path relative to the dataset dir} from a card's front matter (its `configs:`)."""
    files: dict[str, str] = {}
    for config in front.get("configs") or []:
        for entry in (config or {}).get("data_files") or []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                files[entry.get("split", "train")] = entry["path"]
    return files


def dataset_card(rows: list[dict], counts: dict, meta: dict, files: dict[str, str] | None = None) -> str:
    """A README with YAML front matter: counts, drops, principles, scores, provenance.

    `files` ({split: parquet path}) becomes `configs:`, what `datasets.load_dataset(DIR)` reads.
    """
    import io

    from ruamel.yaml import YAML

    principles = Counter(p for r in rows for p in r.get("principle_ids", []))
    front = {
        "pretty_name": meta.get("pretty_name")
        or f"cai preference data ({meta.get('constitution', {}).get('name', 'constitution')})",
        "tags": ["constitutional-ai", "preference", "dpo", "cai"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": p} for s, p in (files or {}).items()]}],
        "counts": counts,
        "dropped": dict(meta.get("dropped", {})),
        "principle_usage": dict(principles.most_common()),
        "scores": _score_summary(rows),
        "quality_rules": dict(meta.get("quality") or {}),
        "verify": meta.get("verify"),
        "model": meta.get("model", ""),
        "constitution": meta.get("constitution", {}),
        "strategy": meta.get("strategy", ""),
        "command": meta.get("command", ""),
    }
    if meta.get("sources"):
        front["sources"] = list(meta["sources"])
    buf = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(front, buf)
    lines = [f"| {k} | {v} |" for k, v in counts.items()]
    drops = [f"| {k} | {v} |" for k, v in front["dropped"].items()] or ["| (none) | 0 |"]
    quality = ""
    if front["quality_rules"]:
        quality = ("## Quality rules\n\nEach rule reads the pair as a reviewer would; `dropped` counts the pairs it\n"
                   "was the first reason for. Dropped pairs, with the evidence, are in `dropped.jsonl`.\n\n"
                   "| rule | enabled | settings | dropped |\n| --- | --- | --- | --- |\n"
                   + "\n".join(f"| {name} | {'yes' if r.get('enabled') else 'no'} | "
                                + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("enabled", "dropped"))
                                + f" | {r.get('dropped', 0)} |" for name, r in front["quality_rules"].items())
                   + "\n\n")
    sources = ""
    if front.get("sources"):
        keys = list(dict.fromkeys(k for src in front["sources"] for k in src))
        sources = ("## Sources\n\n| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys) + "\n"
                   + "\n".join("| " + " | ".join(str(src.get(k, "")) for k in keys) + " |" for src in front["sources"])
                   + "\n\n")
    what = meta.get("description") or ("Preference pairs made by critique -> revise under a constitution: "
                                        "`chosen` is the revised\nresponse, `rejected` the one it replaced.")
    empty = empty_splits_note(counts)
    return (
        f"---\n{buf.getvalue()}---\n\n# {front['pretty_name']}\n\n"
        f"{what} Rows use TRL's explicit-prompt conversational\n"
        "format (`prompt`, `chosen`, `rejected` as message lists); the `*_sft` splits hold `messages`.\n"
        + (meta.get("split_note") or "Splits are made by prompt, so no test prompt appears in training.") + "\n\n"
        "| split | rows |\n| --- | --- |\n" + "\n".join(lines) + "\n\n"
        + (f"Note: {empty}.\n\n" if empty else "") +
        "## Dropped pairs\n\n| reason | pairs |\n| --- | --- |\n" + "\n".join(drops) + "\n\n" + quality + sources +
        f"## Provenance\n\n- model: `{front['model']}`\n- constitution: `{front['constitution']}`\n"
        f"- strategy: `{front['strategy']}`\n- command: `{front['command']}`\n"
    )

def read_card(dataset_dir: Path) -> dict | None:
    """The YAML front matter of a dataset card (README.md), or None."""
    card = dataset_dir / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---\n") or text.count("---\n") < 2:
        return None
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        front = YAML(typ="safe").load(text.split("---\n", 2)[1])
    except YAMLError:
        return None
    return front if isinstance(front, dict) else None


def load_card(dataset_dir: str | Path) -> dict:
    """The front matter of a dataset's card, or a one-line error saying why there is none."""
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "README.md").is_file():
        raise CaiError(f"{dataset_dir}: no dataset card README.md; is this a directory written by `cai data pairs`?")
    front = read_card(dataset_dir)
    if front is None:
        raise CaiError(f"{dataset_dir / 'README.md'}: no YAML front matter")
    return front
