"""`cai data import` and `cai data mix`: public preference datasets in, mixtures out."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("import", help="Import a public dataset: hh-rlhf, hh-rlhf-red-team, shp, webgpt or cai-harmless.")
    def import_(
        fmt: str = typer.Argument(..., metavar="FORMAT", help="hh-rlhf, hh-rlhf-red-team, shp, webgpt or cai-harmless."),
        source: str = typer.Argument(..., help="A .jsonl/.json(.gz)/.parquet/.arrow file, a folder of them, a "
                                               "save_to_disk folder, or a dataset id in the local HF cache."),
        out: str = typer.Option(..., help="Dataset dir (pairs formats), prompt dir (red team) or run dir (cai-harmless)."),
        split_map: list[str] = typer.Option([], help="SOURCE_SPLIT=train|test|skip (repeatable), e.g. validation=test."),
        limit: Optional[int] = typer.Option(None, help="Read only the first N rows of each source split."),
        score: bool = typer.Option(False, "--score", help="Add toxicity and bias score columns (pairs formats)."),
        scorer: str = typer.Option("toxic-bilstm", help="Toxicity scorer for --score: toxic-bilstm or detoxify."),
        min_rating: Optional[float] = typer.Option(None, help="hh-rlhf-red-team: keep attacks rated at least this "
                                                              "(0-4; 3 keeps the ones that worked)."),
        min_score_ratio: Optional[float] = typer.Option(None, help="shp: keep pairs whose preferred comment scored at "
                                                                   "least this many times the other (2 in the SHP paper)."),
        test_share: float = typer.Option(0.1, help="Share of prompts held out when the source has no test split."),
        seed: int = typer.Option(0),
    ) -> None:
        from cai.cli import tables
        from cai.preferences.imports.base import ImportConfig, parse_split_map
        from cai.preferences.imports.job import run_import

        cfg = ImportConfig(format=fmt, source=source, out=out, split_map=parse_split_map(split_map), limit=limit,
                           score=score, scorer=scorer, test_share=test_share, seed=seed, min_rating=min_rating,
                           min_score_ratio=min_score_ratio)
        result = run_import(cfg)
        console = tables.console()
        for note in result["notes"]:
            console.print(f"[yellow]note:[/yellow] {note}")
        counts = result["counts"]
        if result["output"] == "pairs":
            console.print("splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            console.print(f"dataset written to {out} (dropped rows with the reason: dropped.jsonl)")
        elif result["output"] == "prompts":
            console.print(f"{counts['prompts']} prompts written to {out}/prompts.jsonl; generate with "
                          f"`cai generate -c constitution/hhh.yaml --prompts {out}/prompts.jsonl`")
        else:
            console.print(f"{counts['records']} generation records written to run {out} "
                          f"({counts['test records']} in the test split); constitution: {counts['constitution']}")
            if counts["records missing middle rounds"]:
                console.print(f"[yellow]note:[/yellow] {counts['records missing middle rounds']} records had more "
                              "rounds than their rows hold; the middle revisions are left out")
            console.print(f"build pairs with `cai data pairs {out} --strategy final-vs-initial` (or per-round)")
        console.print(tables.drops(f"{result['read']} rows read -> {result['kept']} kept", result["dropped"]))

    @app.command(help="Mix preference datasets by weight (test splits kept whole and apart; the card lists the sources).")
    def mix(
        datasets: list[str] = typer.Argument(..., help="Dataset dirs (cai exports, save_to_disk dirs) or cached ids."),
        out: str = typer.Option(..., help="Dataset directory to write."),
        weights: Optional[str] = typer.Option(None, help="Shares of the mixed train split, e.g. 0.85,0.15 "
                                                         "(default: by size)."),
        seed: int = typer.Option(0, help="Seed of the sampling: the same seed gives the same mix."),
    ) -> None:
        from rich.table import Table

        from cai.cli import tables
        from cai.preferences.mix import MixConfig, mix_datasets, parse_weights

        result = mix_datasets(MixConfig(sources=datasets, out=out, weights=parse_weights(weights), seed=seed))
        console = tables.console()
        for note in result["notes"]:
            console.print(f"[yellow]note:[/yellow] {note}")
        table = Table(title=f"mix written to {out}")
        for col in ("source", "weight", "train rows", "train used", "test rows"):
            table.add_column(col, justify="left" if col == "source" else "right")
        for s in result["sources"]:
            table.add_row(s["name"], f"{s['weight']:.3f}", str(s["train rows"]), str(s["train used"]),
                          str(s["test rows"]))
        console.print(table)
        console.print("splits: " + ", ".join(f"{k} {v}" for k, v in result["counts"].items()))
        if result["dropped"]:
            console.print(tables.drops("dropped", result["dropped"]))
