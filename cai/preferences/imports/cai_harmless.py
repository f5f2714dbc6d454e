"""`cai-harmless`: CAI data in the Hugging Face layout, imported as generation records.

The layout of HuggingFaceH4/cai-conversation-harmless (and of cai's own export):
`init_prompt`, `init_response`, `critic_prompt`, `critic_response`, `revision_prompt`,
`revision_response`, `prompt`, `messages`, `chosen`, `rejected`, in the splits
`train_sft`, `train_prefs`, `test_sft`, `test_prefs`. Each row becomes a generation
record in a run directory (`--out`), so `cai data pairs OUT --strategy ...`, the quality
rules and the safety filters run on it as on a run `cai generate` made; records of the
test splits keep `split: test`, and `cai data pairs` keeps them in its test split.

Principles: cai's own export names its constitution in its card (its snapshot is
copied); the hub copy ships `constitution.json` (critique/revision pairs and the
few-shot `system_chat`, which the few-shot-copy rule then compares with); otherwise
each distinct critique/revision request becomes a principle. Rows of cai's own export
(`generation_id`, `principle_ids`, `critiques`) are grouped back into one record per
generation; with `final-vs-initial` rows of three or more rounds the middle revisions
are not in the export and are left out.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

from cai.errors import CaiError, located
from cai.preferences.imports.base import Importer, RowContext, Skip, SkipPart, Written, _kind, get, messages

COLUMNS = ("init_prompt", "init_response", "critic_prompt", "critic_response", "revision_prompt", "revision_response")
NAME = "cai-harmless-import"


class CAIHarmless(Importer):
    name = "cai-harmless"
    output = "records"
    fields = (*COLUMNS, "chosen", "rejected")
    splits = ("train_sft", "train_prefs", "test_sft", "test_prefs")
    split_map = {"train_sft": "train", "train_prefs": "train", "test_sft": "test", "test_prefs": "test",
                 "train": "train", "test": "test"}

    def __init__(self, cfg):
        super().__init__(cfg)
        self._ids: set[str] = set()

    def check(self, row: dict, ctx: RowContext) -> None:
        if (ctx.split or "").endswith("_sft") and "init_prompt" not in row and "messages" in row:
            raise SkipPart(f"{ctx.split}: an SFT view of the prefs splits (no CAI columns): skipped")
        super().check(row, ctx)

    def convert(self, row: dict, ctx: RowContext) -> dict:
        texts = {c: _content(row, c, ctx) for c in COLUMNS}
        chosen = messages(get(row, "chosen"), "assistant", "chosen", ctx)[-1]["content"]
        rejected = messages(get(row, "rejected"), "assistant", "rejected", ctx)[-1]["content"]
        if not texts["init_prompt"].strip() or not texts["init_response"].strip():
            raise Skip("empty prompt or response")
        gid = get(row, "generation_id")
        if not isinstance(gid, str) or not gid:
            gid = "h4-" + hashlib.sha256(f"{texts['init_prompt']}\0{texts['init_response']}".encode()).hexdigest()[:12]
            if gid in self._ids:
                raise Skip("duplicate", "the same prompt and first response appear earlier")
            self._ids.add(gid)
        pair_id = get(row, "pair_id")
        order = pair_id.rsplit(":", 1)[-1] if isinstance(pair_id, str) else "0"
        listed = get(row, "principle_ids")
        return {
            "generation_id": gid, "order": int(order) if order.isdigit() else 0,
            "prompt": [{"role": "user", "content": texts["init_prompt"].strip()}], **texts,
            "chosen": chosen.strip(), "rejected": rejected.strip(),
            "strategy": _str(get(row, "strategy")), "principle_ids": listed if isinstance(listed, list) else [],
            "critiques": _list(get(row, "critiques")), "category": _str(get(row, "category")),
            "model": _str(get(row, "model")), "source": _str(get(row, "source")) or f"{ctx.label}: {ctx.where}",
            "chosen_truncated": get(row, "chosen_truncated") is True,
            "rejected_truncated": get(row, "rejected_truncated") is True,
        }

    def write(self, rows: list[dict], test_ids: set[str] | None, dropped_rows: list[dict], meta: dict) -> Written:
        """A run directory: generation records, the constitution snapshot, and a manifest."""
        from cai.constitution import constitution_hash
        from cai.generation.snapshot import write_snapshot
        from cai.generation.store import FINGERPRINT_KEYS, RunStore
        from cai.generation.templates import Templates
        from cai.io import write_jsonl

        store = RunStore(self.cfg.out)
        if store.has_records():
            raise CaiError(f"{self.cfg.out}: already holds generation records; choose another --out")
        groups: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            groups[row["generation_id"]].append(row)
        constitution, source_file, note = self._constitution(rows)
        by_critique = {p.critique: p.id for p in constitution.principles}
        by_id = {p.id: p for p in constitution.principles}
        records, partial = [], 0
        for gid, group in groups.items():
            record, missing = _record(gid, sorted(group, key=lambda r: r["order"]), by_critique, by_id)
            partial += missing > 0
            if test_ids is not None:
                record["split"] = "test" if gid in test_ids else "train"
            records.append(record)
        models = sorted({r["model"] for r in records if r["model"]})
        model = models[0] if len(models) == 1 else ", ".join(models) or "unknown (imported)"
        templates = Templates()
        with store.locked():
            tmp = store.dir / ".import-constitution.yaml"
            if source_file is None:
                _dump_constitution(constitution, tmp)
            snapshot = write_snapshot(store.dir, source_file or tmp, templates)
            tmp.unlink(missing_ok=True)
            for start in range(0, len(records), 1000):
                store.append(records[start:start + 1000])
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            rounds = max((len(r["rounds"]) for r in records), default=0)
            fingerprint = {k: None for k in FINGERPRINT_KEYS}
            fingerprint.update(constitution_sha256=constitution_hash(constitution),
                               templates_sha256=templates.sha256(), model=model, rounds=rounds)
            store.write_manifest({
                "run": str(store.dir), "command": meta["command"],
                "imported": {"format": self.name, "source": self.cfg.source, "splits": meta["sources"],
                             "dropped": meta["dropped"], "constitution_from": note},
                "config": {"rounds": rounds}, "fingerprint": fingerprint,
                "constitution": {"path": str(store.dir / snapshot["constitution"]), "name": constitution.name,
                                 "version": constitution.version},
                "model": {"name": model, "path": None, "source": "imported"}, "engine": None,
                "started": now, "finished": now, "totals": {"records": len(records)}, "snapshot": snapshot,
            })
            write_jsonl(store.dir / "import-dropped.jsonl", dropped_rows)
        test = sum(r.get("split") == "test" for r in records)
        return Written({"train": len(records) - test, "test": test}, constitution=note, partial_records=partial)

    def _constitution(self, rows: list[dict]):
        """(Constitution, its file to snapshot or None, where it came from)."""
        from pydantic import ValidationError

        from cai.constitution import Constitution, load_constitution
        from cai.preferences.export import read_card

        root = Path(self.source.path)
        card = read_card(root) if root.is_dir() else None
        named = (card or {}).get("constitution") or {}
        for key in ("snapshot", "path"):
            if named.get(key) and Path(named[key]).is_file():
                return load_constitution(named[key]), named[key], f"the dataset card's constitution {named[key]}"
        principles, few_shot, note = [], [], "derived from the critique and revision requests in the data"
        for folder in [root if root.is_dir() else root.parent, *list(root.parents)[:3]]:
            found = folder / "constitution.json"
            if found.is_file():
                principles, few_shot = _hub_constitution(found)
                note = f"{found} (principles and few-shot dialogues)"
                break
        known = {p["critique"] for p in principles}
        for row in rows:
            for pid, critique, revision in _row_principles(row):
                if critique not in known:
                    known.add(critique)
                    principles.append({"id": pid or f"principle-{len(principles) + 1:02d}",
                                       "critique": critique, "revision": revision})
        seen_ids: set[str] = set()
        for p in principles:                 # ids must be unique: a repeated id gets a suffix
            base, k = p["id"], 2
            while p["id"] in seen_ids:
                p["id"], k = f"{base}-{k}", k + 1
            seen_ids.add(p["id"])
        try:
            return Constitution(name=named.get("name") or NAME, principles=principles, few_shot=few_shot), None, note
        except ValidationError as err:
            raise CaiError(f"{self.cfg.source}: cannot build a constitution from the data: {err}") from None


def _row_principles(row: dict):
    """(principle id or None, critique request, revision request) of the row's first round."""
    critique = row["critic_prompt"].strip() or "(no critique request in the source)"
    revision = row["revision_prompt"].strip() or "(no revision request in the source)"
    ids = row["principle_ids"]
    yield (ids[0] if ids and isinstance(ids[0], str) else None), critique, revision


def _hub_constitution(path: Path) -> tuple[list[dict], list[list[dict]]]:
    """Principles and few-shot dialogues of the hub's constitution.json (`constitutions`, `system_chat`)."""
    from pydantic import ValidationError

    from cai.constitution import Constitution

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise located(path, "", f"not valid JSON ({err})") from None
    items = data.get("constitutions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise located(path, "", "constitutions: missing (a list of {critic, revision})")
    principles = []
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("critic"), str)
                and isinstance(item.get("revision"), str)):
            raise located(path, f"constitutions[{i}]", "must have `critic` and `revision` strings")
        principles.append({"id": f"principle-{i + 1:02d}", "critique": item["critic"].strip(),
                           "revision": item["revision"].strip()})
    dialogues = []
    for turns in data.get("system_chat") or []:
        try:     # a dialogue cai cannot replay (odd length, roles out of turn) is left out
            Constitution(name="check", principles=[{"id": "x", "critique": "x", "revision": "x"}], few_shot=[turns])
            dialogues.append([{"role": t["role"], "content": t["content"]} for t in turns])
        except (ValidationError, KeyError, TypeError):
            continue
    return principles, dialogues


def _record(gid: str, group: list[dict], by_critique: dict, by_id: dict) -> tuple[dict, int]:
    """One generation record from its rows, and how many of its rounds the rows do not hold."""
    first = group[0]

    def principle_of(row: dict) -> str:
        return row["principle_ids"][0] if row["principle_ids"] else by_critique.get(row["critic_prompt"].strip(), "")

    def round_of(row: dict, revision: str, truncated: bool) -> dict:
        return {"principle_id": principle_of(row), "critique_request": row["critic_prompt"],
                "critique": row["critic_response"], "revision_request": row["revision_prompt"],
                "revision": revision, "revision_finish": "length" if truncated else "stop"}

    missing = 0
    if first["strategy"] == "per-round" or len(group) > 1:
        rounds = [round_of(r, r["chosen"], r["chosen_truncated"]) for r in group]
    else:
        final = first["chosen"] if first["chosen"] != first["init_response"].strip() else first["rejected"]
        truncated = first["chosen_truncated"] if final == first["chosen"] else first["rejected_truncated"]
        ids = first["principle_ids"]
        if len(ids) <= 1:
            rounds = [round_of(first, final, truncated)]
        else:
            rounds = [round_of(first, first["revision_response"].strip(), False)]
            last = by_id.get(ids[-1])
            rounds.append({"principle_id": ids[-1], "critique_request": last.critique if last else "",
                           "critique": first["critiques"][-1] if first["critiques"] else "",
                           "revision_request": last.revision if last else "", "revision": final,
                           "revision_finish": "length" if truncated else "stop"})
            missing = len(ids) - 2
    initial_cut = first["rejected_truncated"] if first["rejected"] == first["init_response"].strip() else False
    return {"id": gid, "prompt": first["init_prompt"].strip(), "source": first["source"], "category": first["category"],
            "initial_response": first["init_response"].strip(), "initial_finish": "length" if initial_cut else "stop",
            "rounds": rounds, "final_response": rounds[-1]["revision"], "model": first["model"],
            "engine": "imported", "seed": None, "usage": {}}, missing


def _dump_constitution(constitution, path: Path) -> None:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# Built by `cai data import cai-harmless` from the imported data.\n")
        yaml.dump(constitution.model_dump(mode="json"), fh)


def _content(row: dict, name: str, ctx: RowContext) -> str:
    """A text column; the older hub layout stored {role, content} there."""
    value = get(row, name)
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        value = value["content"]
    if not isinstance(value, str):
        raise located(ctx.label, ctx.where, f"{name}: must be a string, got {_kind(value)}")
    return value


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _list(value) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

