"""`cai data`: preference pairs from generation records, checked, filtered and exported.

- `job`          `cai data pairs`: records -> pairs -> quality rules -> safety rules -> dataset
- `strategies`   how a record becomes pairs (final-vs-initial, per-round)
- `feedback`     AI feedback: the model judges responses from option-label log-probabilities
- `quality`      the rules that drop pairs a careful reader would reject, with their evidence
- `audit`        `cai data audit`: what each rule flags, refusals by category
- `export`       the Hugging Face DatasetDict TRL trains on, with its card
- `validation`   `cai data validate`: one line per bad row
- `annotations`  human preference annotations in the alignment guide's format
- `agreement`    inter-annotator agreement (Cohen's kappa, Krippendorff's alpha)
- `imports`      `cai data import FORMAT SOURCE`: public preference and red-team datasets, one module per format
- `mix`          `cai data mix`: several datasets by weight, test splits kept apart
- `config`       the settings of every `cai data` job
"""
