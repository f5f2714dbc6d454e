"""`cai constitution render`: show the exact conversation the model will see for one prompt."""

from __future__ import annotations

from typing import Optional

import typer

ANSWER_PLACEHOLDER = "<the model's answer>"
CRITIQUE_PLACEHOLDER = "<the model's critique>"


def register(app: typer.Typer) -> None:
    @app.command(help="Print the conversation of every stage for one prompt (with --model: through its chat template).")
    def render(
        path: str = typer.Argument(..., help="Constitution YAML."),
        prompt: str = typer.Option(..., "--prompt", "-p", help="The user prompt."),
        model: Optional[str] = typer.Option(None, help="Apply this model's chat template (a local dir or .gguf; 'default' for the embedded model)."),
        prompts_dir: Optional[str] = typer.Option(None, help="Folder with your own copies of the templates."),
        principle: Optional[str] = typer.Option(None, help="Principle id for round 1 (default: sampled with --seed)."),
        seed: int = typer.Option(0),
        few_shot: Optional[int] = typer.Option(None, help="Use only the first K few-shot dialogues."),
    ) -> None:
        from rich.console import Console
        from rich.panel import Panel
        from rich.text import Text

        from cai.constitution import get_principle, load_constitution
        from cai.generation import conversation as conv
        from cai.generation.principles import sample_principles
        from cai.generation.templates import Templates

        c = load_constitution(path)
        templates = Templates(prompts_dir)
        if principle:
            chosen = get_principle(c, principle)
        else:
            enabled = [p for p in c.principles if p.enabled]
            pid = sample_principles(enabled, 1, seed=seed, strategy=c.sampling.strategy, key="render")[0]
            chosen = get_principle(c, pid)
        chat = conv.answer_conversation(templates, c, prompt, few_shot=few_shot)
        stages = [("answer", list(chat))]
        chat += [conv.reply(ANSWER_PLACEHOLDER), conv.critique_request(templates, chosen, 1)]
        stages.append((f"critique (principle {chosen.id})", list(chat)))
        chat += [conv.reply(CRITIQUE_PLACEHOLDER), conv.revision_request(templates, chosen, 1)]
        stages.append((f"revise (principle {chosen.id})", list(chat)))

        console = Console()
        if model:
            from transformers import AutoTokenizer

            from cai.engines.chat import apply_chat_template
            from cai.models import resolve_model

            ref = resolve_model(None if model == "default" else model)
            tokenizer = AutoTokenizer.from_pretrained(ref.path)
            for title, turns in stages:
                console.rule(f"[bold]{title}[/bold]")
                console.print(apply_chat_template(tokenizer, turns), markup=False, highlight=False)
            return
        for title, turns in stages:
            console.rule(f"[bold]{title}[/bold]")
            for m in turns:
                console.print(Panel(Text(m["content"]), title=m["role"], title_align="left"))
