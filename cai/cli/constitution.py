"""`cai constitution`: validate, inspect and edit constitution files.

`cai.constitution` (pydantic, ruamel) is imported inside the commands so
`cai --help` stays fast.
"""

from __future__ import annotations

from typing import Optional

import typer

from cai.cli.options import group
from cai.errors import CaiError, located

app = group("Validate, list, edit and render constitutions.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="constitution")


PATH = typer.Argument(..., help="A constitution YAML file.")
ID = typer.Argument(..., metavar="ID", help="A principle id.")


def _tags(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


@app.command()
def validate(paths: list[str] = typer.Argument(..., metavar="PATH...", help="Constitution YAML files.")) -> None:
    """Check constitution files; report every problem with its line and field."""
    from cai.constitution import enabled_principles, load_constitution

    failed = False
    for path in paths:
        try:
            c = load_constitution(path)
        except CaiError as err:
            failed = True
            for line in str(err).splitlines():
                typer.echo(f"error: {line}", err=True)
            continue
        typer.echo(
            f"ok: {path} ({len(c.principles)} principles, {len(enabled_principles(c))} enabled, "
            f"{len(c.few_shot)} few-shot dialogues)"
        )
    if failed:
        raise typer.Exit(2)


@app.command("list")
def list_(path: str = PATH) -> None:
    """Show the principles as a table."""
    from rich.console import Console
    from rich.table import Table

    from cai.constitution import load_constitution

    c = load_constitution(path)
    s = c.sampling
    table = Table(title=f"{c.name} v{c.version}: {s.rounds} rounds, {s.strategy}, no_repeat={s.no_repeat}")
    rows = [(p.id, "yes" if p.enabled else "no", f"{p.weight:g}", ",".join(p.tags)) for p in c.principles]
    widths = [max(len(column), *(len(row[i]) for row in rows))
              for i, column in enumerate(("id", "enabled", "weight", "tags"))]
    for column, width in zip(("id", "enabled", "weight", "tags"), widths):
        table.add_column(column, justify="right" if column == "weight" else "left", no_wrap=True, min_width=width)
    table.add_column("critique")
    console = Console()
    room = max(8, console.width - sum(widths) - 16)  # 5 columns: 3 characters of padding and border each, plus 1
    for row, p in zip(rows, c.principles):
        table.add_row(*row, p.critique if len(p.critique) <= room else p.critique[: room - 1] + "…")
    console.print(table)


@app.command()
def show(path: str = PATH, principle_id: str = ID) -> None:
    """Print one principle in full."""
    from cai.constitution import get_principle, load_constitution

    p = get_principle(load_constitution(path), principle_id, path)
    typer.echo(f"id: {p.id}\nenabled: {str(p.enabled).lower()}\nweight: {p.weight:g}\ntags: {', '.join(p.tags)}")
    typer.echo(f"critique: {p.critique}\nrevision: {p.revision}")


@app.command()
def add(
    path: str = PATH,
    principle_id: str = typer.Option(..., "--id", help="New principle id (a slug, e.g. harm-general)."),
    critique: str = typer.Option(..., help="The critique request."),
    revision: str = typer.Option(..., help="The revision request."),
    tags: Optional[str] = typer.Option(None, help="Comma-separated tags, e.g. harmless,honest."),
    weight: float = typer.Option(1.0, help="Sampling weight (> 0) for strategy: weighted."),
    disabled: bool = typer.Option(False, "--disabled", help="Add it switched off."),
) -> None:
    """Append a principle (comments and order in the file are kept)."""
    from cai.constitution import add_principle

    add_principle(
        path, id=principle_id, critique=critique, revision=revision,
        tags=_tags(tags) or [], weight=weight, enabled=not disabled,
    )
    typer.echo(f"added: {path}: principle '{principle_id}'")


@app.command()
def edit(
    path: str = PATH,
    principle_id: str = ID,
    critique: Optional[str] = typer.Option(None, help="New critique request."),
    revision: Optional[str] = typer.Option(None, help="New revision request."),
    tags: Optional[str] = typer.Option(None, help="Comma-separated tags (replaces them; '' clears)."),
    weight: Optional[float] = typer.Option(None, help="New sampling weight (> 0)."),
    new_id: Optional[str] = typer.Option(None, "--id", help="Rename the principle."),
) -> None:
    """Change fields of one principle; refuses a change that would make the file invalid."""
    from cai.constitution import edit_principle

    changes = {"critique": critique, "revision": revision, "tags": _tags(tags), "weight": weight, "id": new_id}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise located(path, "", "nothing to change: give --critique, --revision, --tags, --weight or --id")
    p = edit_principle(path, principle_id, **changes)
    typer.echo(f"updated: {path}: principle '{p.id}' ({', '.join(changes)})")


@app.command()
def remove(path: str = PATH, principle_id: str = ID) -> None:
    """Delete a principle (not the last enabled one)."""
    from cai.constitution import remove_principle

    remove_principle(path, principle_id)
    typer.echo(f"removed: {path}: principle '{principle_id}'")


@app.command()
def enable(path: str = PATH, principle_id: str = ID) -> None:
    """Switch a principle on."""
    from cai.constitution import set_enabled

    set_enabled(path, principle_id, True)
    typer.echo(f"enabled: {path}: principle '{principle_id}'")


@app.command()
def disable(path: str = PATH, principle_id: str = ID) -> None:
    """Switch a principle off (not the last enabled one)."""
    from cai.constitution import set_enabled

    set_enabled(path, principle_id, False)
    typer.echo(f"disabled: {path}: principle '{principle_id}'")


@app.command()
def new(
    path: str = PATH,
    name: Optional[str] = typer.Option(None, help="Constitution name (default: the file name)."),
) -> None:
    """Write a commented starter constitution (never overwrites)."""
    from cai.constitution import new_constitution

    new_constitution(path, name)
    typer.echo(f"created: {path} (edit it, then run: cai constitution validate {path})")


PLACEHOLDERS = {"answer": "<the model's answer>", "critique": "<the model's critique>",
                "revise": "<the model's revision>"}


@app.command(help="Print the conversation of every stage for one prompt (with --model: through its chat template).")
def render(
    path: str = PATH,
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user prompt."),
    prompt_id: Optional[str] = typer.Option(None, "--id", help="The prompt's id in its prompts file (principles are "
                                                                "drawn per id; default: the id cai gives a prompt "
                                                                "without one)."),
    rounds: Optional[int] = typer.Option(None, help="Critique/revise rounds (default: the constitution's)."),
    model: Optional[str] = typer.Option(None, help="Apply this model's chat template (a local dir or .gguf; "
                                                   "'default' for the embedded model)."),
    prompts_dir: Optional[str] = typer.Option(None, help="Folder with your own copies of the templates."),
    principle: Optional[str] = typer.Option(None, help="Principle id for round 1 (default: the one `cai generate` "
                                                       "draws for this prompt)."),
    seed: int = typer.Option(0, help="The seed `cai generate` runs with."),
    few_shot: Optional[int] = typer.Option(None, help="Use only the first K few-shot dialogues."),
) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    from cai.constitution import get_principle, load_constitution
    from cai.generation import conversation as conv
    from cai.generation.principles import principle_plan
    from cai.generation.prompt_files import stable_id
    from cai.generation.templates import Templates

    c = load_constitution(path)
    templates = Templates(prompts_dir)
    n_rounds = c.sampling.rounds if rounds is None else rounds
    plan = principle_plan(c, n_rounds, seed=seed, prompt_id=prompt_id or stable_id(prompt))
    if principle and plan:
        plan[0] = get_principle(c, principle)
    chat = conv.answer_conversation(templates, c, prompt, few_shot=few_shot)
    shown = []
    for stage in conv.stages(n_rounds):
        conv.open_stage(chat, templates, stage, plan)
        title = stage.name + (f" (principle {plan[stage.round - 1].id})" if stage.round else "")
        shown.append((title, list(chat)))
        chat.append(conv.reply(PLACEHOLDERS[stage.kind]))

    console = Console()
    if model:
        from transformers import AutoTokenizer

        from cai.engines.chat import apply_chat_template
        from cai.models import resolve_model

        ref = resolve_model(None if model == "default" else model)
        tokenizer = AutoTokenizer.from_pretrained(ref.path)
        for title, turns in shown:
            console.rule(f"[bold]{title}[/bold]")
            console.print(apply_chat_template(tokenizer, turns), markup=False, highlight=False)
        return
    for title, turns in shown:
        console.rule(f"[bold]{title}[/bold]")
        for m in turns:
            console.print(Panel(Text(m["content"]), title=m["role"], title_align="left"))
