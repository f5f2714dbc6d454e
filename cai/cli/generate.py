"""`cai generate`: answer prompts, then critique and revise them under a constitution."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command(help="Answer prompts with a local model, then critique and revise under a constitution.")
    def generate(
        constitution: str = typer.Option(..., "--constitution", "-c", help="Constitution YAML."),
        prompts: str = typer.Option("data/red_team.jsonl", help="Prompts: .jsonl, .txt, .csv, .parquet or a saved HF dataset dir."),
        prompt_column: Optional[str] = typer.Option(None, help="Column holding the prompt (default: prompt)."),
        model: Optional[str] = typer.Option(None, help="Local HF model dir or .gguf file (default: the embedded SmolLM2-135M-Instruct)."),
        engine: str = typer.Option("transformers", help="transformers, vllm or openai."),
        rounds: Optional[int] = typer.Option(None, help="Critique/revise rounds (default: the constitution's)."),
        out: Optional[str] = typer.Option(None, help="Run directory (default: runs/<constitution>-<prompts>)."),
        seed: int = typer.Option(0, help="Seed for principle sampling and decoding."),
        max_new_tokens: int = typer.Option(256, help="Token budget of each reply."),
        temperature: float = typer.Option(0.0, help="0 decodes greedily."),
        top_p: float = typer.Option(1.0),
        limit: Optional[int] = typer.Option(None, help="Use only the first K prompts (after --shard)."),
        shard: Optional[str] = typer.Option(None, help="i/n: this process takes shard i of n (0-based)."),
        batch_size: int = typer.Option(16, help="Prompts per batch: each stage is one engine call per batch."),
        few_shot: Optional[int] = typer.Option(None, help="Use only the first K few-shot dialogues (default: all)."),
        prompts_dir: Optional[str] = typer.Option(None, help="Folder with your own copies of the prompt templates."),
        chat_template: Optional[str] = typer.Option(None, help="Jinja chat template file for models that have none."),
        dtype: Optional[str] = typer.Option(None, help="float32, bfloat16 or float16 (vllm also auto). Default: float32 for "
                                                     "transformers; vllm on a CPU: float32 unless it has native bf16 "
                                                     "(AVX512-BF16, AMX), else auto. Recorded in the manifest."),
        max_prompt_tokens: Optional[int] = typer.Option(None, help="Longest prompt (chat template and few-shot turns "
                                                                   "included); default: the context minus --max-new-tokens."),
        on_long: str = typer.Option("skip", help="A prompt over the limit: skip (recorded in failed.jsonl with the "
                                                 "reason) or truncate (keeps its head and tail; the record says so)."),
        retry_failed: bool = typer.Option(True, "--retry-failed/--no-retry-failed",
                                          help="On resume, try the prompts in failed.jsonl again."),
        max_batch_tokens: Optional[int] = typer.Option(None, help="transformers: rows x (prompt + new tokens) per "
                                                                  "micro-batch (default: sized from free memory)."),
        verbose: bool = typer.Option(False, help="Show the engine's own logs (vLLM prints hundreds of lines at start)."),
        force_new: bool = typer.Option(False, help="Start the run over when its settings changed (old records move to previous/)."),
        quiet: bool = typer.Option(False, help="No progress bars: one JSON line per stage on stdout."),
        no_pairs: bool = typer.Option(False, "--no-pairs", help="Stop after generation; build pairs later with `cai data pairs`."),
        strategy: str = typer.Option("final-vs-initial", help="Pair strategy for the dataset built at the end."),
        tensor_parallel_size: int = typer.Option(1, help="vllm: GPUs per model replica."),
        data_parallel_size: int = typer.Option(1, help="vllm: model replicas."),
        enforce_eager: Optional[bool] = typer.Option(None, "--enforce-eager/--compile", help="vllm: skip graph compilation (default: eager on CPU)."),
        base_url: Optional[str] = typer.Option(None, help="openai: server URL, e.g. http://127.0.0.1:8000/v1."),
        concurrency: int = typer.Option(8, help="openai: requests in flight."),
    ) -> None:
        from pathlib import Path

        from cai.errors import CaiError
        from cai.generation.job import GenerateConfig, run

        options: dict = {}
        template_text = None
        if chat_template:
            try:
                template_text = Path(chat_template).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise CaiError(f"{chat_template}: --chat-template: cannot read ({err.__class__.__name__})") from None
        if engine == "transformers":
            options = {"batch_size": batch_size, "chat_template": template_text, "dtype": dtype,
                       "max_batch_tokens": max_batch_tokens}
        elif engine == "vllm":
            options = {"tensor_parallel_size": tensor_parallel_size, "data_parallel_size": data_parallel_size,
                       "enforce_eager": enforce_eager, "chat_template": template_text, "dtype": dtype,
                       "verbose": verbose}
        elif engine == "openai":
            if not base_url or not model:
                raise CaiError("--engine openai needs --base-url and --model (the model name the server serves)")
            if dtype:
                raise CaiError("--dtype: with --engine openai the server chooses the dtype; start it with the one you want")
            options = {"base_url": base_url, "concurrency": concurrency}
        summary = run(GenerateConfig(
            constitution=constitution, prompts=prompts, prompt_column=prompt_column, model=model, engine=engine,
            rounds=rounds, out=out, seed=seed, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            limit=limit, shard=shard, batch_size=batch_size, few_shot=few_shot, prompts_dir=prompts_dir,
            force_new=force_new, retry_failed=retry_failed, max_prompt_tokens=max_prompt_tokens, on_long=on_long,
            engine_options=options,
        ), quiet=quiet)
        if not no_pairs and summary["done"] + summary["skipped (done before)"] > 0:
            from cai.cli.data import pairs

            pairs(run=summary["run"], strategy=strategy, out=None, no_filter=False, rules=None, scorer=None,
                  toxicity_max=None, test_share=0.1, seed=seed, keep_truncated=False, skip_rule=[], verify="none",
                  verify_margin=0.1, feedback_margin=0.1, feedback_model=None)
