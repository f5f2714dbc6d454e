"""Records from the loop on a scripted engine, through the pair filter: only the good revision survives."""

from __future__ import annotations

from support import REPO
from support.engines import FakeEngine, scripted_reply, stage_of

from cai.constitution import load_constitution
from cai.engines.base import SamplingParams
from cai.generation.loop import LoopConfig, run_batch
from cai.generation.prompt_files import PromptRecord
from cai.generation.templates import Templates
from cai.preferences.pair_filter import PairRules, QualityFilter
from cai.preferences.quality import CopySources
from cai.preferences.strategies import final_vs_initial

HHH = load_constitution(REPO / "constitution" / "hhh.yaml")
FEW_SHOT_REVISION = HHH.few_shot[0][-1].content

REVISIONS = {
    "good": None,                                               # the default script's careful answer
    "few-shot copy": FEW_SHOT_REVISION,
    "critique echo": "It gives no reasons and no example, it gives no reasons and no example at all.",
    "repetition loop": "Water it well. " * 20,
    "meta-comment": "The last answer is not helpful because the response contains a hedge.",
}


def respond(chat):
    stage, prompt = stage_of(chat)
    kind = prompt.split(":")[0]
    if stage == "revise" and REVISIONS[kind] is not None:
        return REVISIONS[kind]
    return scripted_reply(chat)


def test_only_the_good_revision_is_kept_and_each_failure_is_named():
    batch = [PromptRecord(id=kind, prompt=f"{kind}: how do I keep a basil plant alive on a windowsill?",
                          source="test", category="helpful") for kind in REVISIONS]
    cfg = LoopConfig(rounds=1, seed=0, few_shot=0, params=SamplingParams(max_new_tokens=200))
    records = run_batch(FakeEngine(respond=respond), batch, HHH, Templates(), cfg,
                        engine_name="fake", model_name="fake").records
    dropped = {}
    pair_filter = QualityFilter(PairRules(), sources=CopySources.from_constitution(HHH, Templates()),
                                on_drop=lambda row, why, detail: dropped.setdefault(row["generation_id"], why))
    kept = list(pair_filter(row for record in records for row in final_vs_initial(record)))
    assert [row["generation_id"] for row in kept] == ["good"]
    assert dropped == {kind: kind for kind in REVISIONS if kind != "good"}
