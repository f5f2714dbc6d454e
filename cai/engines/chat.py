"""Render conversations with the model's chat template, even when it has no system role.

Mistral-style templates raise on a system message or on two turns of the same
role in a row. The critique/revise loop uses both, so when the template
refuses, the system text is folded into the first user turn and same-role
turns are merged, then the template is tried once more.
"""

from __future__ import annotations

from cai.engines.base import Conversation, Message
from cai.errors import CaiError


def apply_chat_template(tokenizer, conversation: Conversation, add_generation_prompt: bool = True) -> str:
    """The prompt text for `conversation`; never mutates it."""
    try:
        return _render(tokenizer, conversation, add_generation_prompt)
    except Exception as exc:
        if not _is_role_error(exc):
            raise
        folded = fold_system(conversation)
        if folded == list(conversation):
            raise CaiError(f"the model's chat template rejects this conversation: {_first_line(exc)}") from exc
    try:
        return _render(tokenizer, folded, add_generation_prompt)
    except Exception as exc:
        if not _is_role_error(exc):
            raise
        raise CaiError("the model's chat template rejects this conversation even with the system text folded into "
                       f"the first user turn: {_first_line(exc)}") from exc


def encode_conversations(tokenizer, conversations: list[Conversation]) -> list[list[int]]:
    """Token ids of each rendered conversation, exactly as the local engines send them.

    The chat template already wrote BOS and friends: tokenizing must not add them twice.
    """
    return [tokenizer(apply_chat_template(tokenizer, c), add_special_tokens=False)["input_ids"] for c in conversations]


def fold_system(conversation: Conversation) -> list[Message]:
    """Leading system text goes in front of the first user turn; later system turns become user turns;
    consecutive turns of one role are joined with a blank line."""
    messages = [dict(m) for m in conversation]
    system_parts = []
    while messages and messages[0]["role"] == "system":
        system_parts.append(messages.pop(0)["content"])
    for message in messages:
        if message["role"] == "system":
            message["role"] = "user"
    if system_parts:
        system = "\n\n".join(system_parts)
        if messages and messages[0]["role"] == "user":
            messages[0]["content"] = f"{system}\n\n{messages[0]['content']}"
        else:
            messages.insert(0, {"role": "user", "content": system})
    merged: list[Message] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"] = f"{merged[-1]['content']}\n\n{message['content']}"
        else:
            merged.append(message)
    return merged


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _is_role_error(exc: Exception) -> bool:
    from jinja2 import TemplateError

    return isinstance(exc, TemplateError) or "role" in str(exc).lower()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
