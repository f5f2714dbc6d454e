"""`cai generate`: answer prompts, then critique and revise them under a constitution.

- `job`           the generation job: prompts in, batches out to workers, records on disk
- `worker`        one loaded engine running whole batches through the loop (context guard, split on faults)
- `ray_replicas`  `--ray`: batches on Ray replicas, each a worker holding its own engine
- `loop`          the answer -> critique -> revise stages over one batch (one engine call per stage)
- `conversation`  the chat turns of each stage, from a constitution and templates
- `principles`    which principle critiques which round (a seeded draw per prompt)
- `templates`     the Jinja2 prompt templates, sandboxed
- `prompt_files`  prompt sets from JSONL, text, CSV, parquet or a saved dataset
- `store`         a run directory: append-only shards, resume, lock, manifest
- `snapshot`      the constitution and templates a run was made with, kept inside it
- `merge`         join the runs of several shards
"""
