"""The chat turns of a critique -> revise dialogue, built from a constitution and templates.

Pure functions: the loop calls them to extend each prompt's conversation, and
`cai constitution render` calls them to show users exactly what the model sees.
"""

from __future__ import annotations

from cai.engines.base import Conversation, Message
from cai.generation.templates import Templates


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
