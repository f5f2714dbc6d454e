"""The detoxify scorer runs the real detoxify loading code on a tiny checkpoint built here, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

pytest.importorskip("detoxify")

import torch

from cai.errors import CaiError
from cai.safety import create_scorer

SENTENCES = [
    "thank you so much for your help",
    "you are a kind and helpful person",
    "what a stupid idea , you idiot",
    "the weather is lovely today",
]
CLASSES = ["toxic", "obscene", "insult", "identity_hate"]


def _write_model_folder(folder, num_labels):
    """A tiny random BERT config + WordPiece tokenizer saved like a hub model folder."""
    from transformers import BertConfig, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for s in SENTENCES for w in s.split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt"), model_max_length=64).save_pretrained(folder)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)
    config.save_pretrained(folder)
    return config


def _write_checkpoint(path, model_type, config, classes=CLASSES):
    """A checkpoint in detoxify's own format: config.arch.args, config.dataset.args.classes, state_dict."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    torch.save({
        "config": {
            "arch": {"args": {"model_type": str(model_type), "model_name": "BertForSequenceClassification",
                              "tokenizer_name": "BertTokenizer", "num_classes": len(classes)}},
            "dataset": {"args": {"classes": list(classes)}},
        },
        "state_dict": model.state_dict(),
    }, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("detoxify")
    config = _write_model_folder(root / "tiny-bert", len(CLASSES))
    ckpt = _write_checkpoint(root / "tiny.ckpt", root / "tiny-bert", config)
    return root, config, ckpt


def test_scores_with_local_checkpoint(tiny):
    _, _, ckpt = tiny
    scorer = create_scorer("detoxify", checkpoint=str(ckpt))
    scorer.load()
    # detoxify's own renames (toxic -> toxicity, identity_hate -> identity_attack), toxicity first.
    assert scorer.columns == ("toxicity", "obscene", "insult", "identity_attack")
    rows = scorer.score(SENTENCES + [""], batch_size=2)
    assert len(rows) == len(SENTENCES) + 1
    for row in rows:
        assert tuple(row) == scorer.columns
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in row.values())
    single = [scorer.score([t], batch_size=1)[0] for t in SENTENCES]   # detoxify squeezes a batch of one
    for a, b in zip(rows, single):
        assert all(abs(a[k] - b[k]) < 1e-5 for k in a)
    scorer.close()


def test_hub_named_checkpoint_loads_with_config_folder(tiny):
    root, config, _ = tiny
    # Like the published checkpoints: model_type is a hub name this offline machine cannot fetch.
    ckpt = _write_checkpoint(root / "hubnamed.ckpt", "bert-base-uncased", config)
    with pytest.raises(CaiError, match="huggingface_config_path") as err:
        create_scorer("detoxify", checkpoint=ckpt).load()
    assert "\n" not in str(err.value)
    scorer = create_scorer("detoxify", checkpoint=ckpt, huggingface_config_path=root / "tiny-bert")
    (row,) = scorer.score(["you idiot"])
    assert set(row) == {"toxicity", "obscene", "insult", "identity_attack"}


def test_missing_checkpoint_is_one_line_naming_path(tmp_path):
    missing = tmp_path / "nowhere" / "toxic.ckpt"
    with pytest.raises(CaiError) as err:
        create_scorer("detoxify", checkpoint=missing).load()
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CaiError, match="not a detoxify checkpoint"):
        create_scorer("detoxify", checkpoint=path).load()


def test_checkpoint_without_toxic_class(tiny, tmp_path):
    root, config, _ = tiny
    ckpt = _write_checkpoint(tmp_path / "notoxic.ckpt", root / "tiny-bert", config,
                             classes=["obscene", "insult", "threat", "spam"])
    with pytest.raises(CaiError, match="no 'toxic'"):
        create_scorer("detoxify", checkpoint=ckpt).load()


def test_no_checkpoint_offline_explains_checkpoint_option(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # empty torch hub cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CaiError) as err:
        create_scorer("detoxify", model_type="unbiased").load()
    message = str(err.value)
    assert "--checkpoint" in message and "downloads" in message and "\n" not in message


def test_unknown_model_type():
    with pytest.raises(CaiError, match="unknown detoxify model_type 'huge'"):
        create_scorer("detoxify", model_type="huge")
