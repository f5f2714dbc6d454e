"""The AI-feedback judge: a chat model asked two-option questions, read from its label log-probabilities.

Sits above `engines` and `generation` and below everything that judges
(`preferences`, `safety`, `train`, `evaluation`), so none of them imports another
for it.

- `labels`    the questions (compare two responses, harmless, follows a principle), both option orders
- `settings`  which judge: `JudgeSpec` and the `--judge-engine/--judge-base-url/--judge-model` settings
- `judge`     the judge engine built from its settings, with its cache and counts
- `cache`     the judge's answers on disk, keyed by (model, conversation, labels)
"""
