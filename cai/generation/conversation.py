"""The stages and chat turns of a critique -> revise dialogue, built from a constitution and templates.

Pure functions: the loop calls them to extend each prompt's conversation, and
`cai constitution render` calls the same ones to show users exactly what the
model sees, stage by stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.engines.base import Conversation, Message
from cai.generation.templates import Templates


@dataclass(frozen=True)
class Stage:
    """One engine call of the loop: the answer (round 0), then a critique and a revision per round."""

    kind: str       # "answer" | "critique" | "revise"
    round: int

    @property
    def name(self) -> str:
        return "answer" if self.kind == "answer" else f"{self.kind} r{self.round}"


def stages(rounds: int) -> list[Stage]:
    """The stages of a run with `rounds` critique -> revise rounds, in order."""
    return [Stage("answer", 0)] + [Stage(kind, r) for r in range(1, rounds + 1) for kind in ("critique", "revise")]


def stage_names(rounds: int) -> list[str]:
    return [s.name for s in stages(rounds)]


def open_stage(chat: Conversation, templates: Templates, stage: Stage, plan: list) -> None:
    """Add the user turn that opens `stage` (none for the answer: the prompt is already there).

    `plan` is the prompt's principle of each round (`principles.principle_plan`).
    """
    if stage.kind == "critique":
        chat.append(critique_request(templates, plan[stage.round - 1], stage.round))
    elif stage.kind == "revise":
        chat.append(revision_request(templates, plan[stage.round - 1], stage.round))


def few_shot_turns(constitution, limit: int | None = None) -> list[Message]:
    """The constitution's example dialogues, flattened into leading chat turns."""
    dialogues = constitution.few_shot if limit is None else constitution.few_shot[:limit]
    return [{"role": m.role, "content": m.content} for dialogue in dialogues for m in dialogue]


def answer_conversation(
    templates: Templates, constitution, prompt: str, category: str = "", few_shot: int | None = None
) -> Conversation:
    """System turn (when the template is not empty), few-shot dialogues, then the user's prompt."""
    turns: Conversation = []
    system = templates.render("system", constitution=constitution)
    if system:
        turns.append({"role": "system", "content": system})
    turns += few_shot_turns(constitution, few_shot)
    turns.append({"role": "user", "content": templates.render("answer", prompt=prompt, category=category)})
    return turns


def critique_request(templates: Templates, principle, round_number: int) -> Message:
    return {"role": "user", "content": templates.render("critique", principle=principle, round=round_number)}


def revision_request(templates: Templates, principle, round_number: int) -> Message:
    return {"role": "user", "content": templates.render("revision", principle=principle, round=round_number)}


def reply(text: str) -> Message:
    return {"role": "assistant", "content": text}
