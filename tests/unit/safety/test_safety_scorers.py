"""Safety scorers: the torch BiLSTM equals the Keras maths, the bias heuristic counts as the guide does."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from cai.errors import CaiError
from cai.safety import SCORERS, create_scorer
from cai.safety import base as safety_base

pytest.importorskip("h5py")

THANKS = "Thank you so much for your help!"
RUDE = "You are a stupid idiot and a moron."

TEXTS = [
    THANKS,
    RUDE,
    "",
    "Shut up, you dumb jerk; this is crap!!!",
    "The weather in Paris is lovely in spring, and the museums are open late.",
    "zxqv blorptastic unfindableword",                       # no known word: all padding
    " ".join(["please review the attached report carefully"] * 30),  # > 100 words: truncated
    "Line one\twith a tab\nand a newline, UPPER case and punctuation...",
]


@pytest.fixture(scope="module")
def bilstm():
    import importlib.util

    if importlib.util.find_spec("toxic_classifier") is None:
        pytest.skip("needs: pip install --no-deps toxic-comment-classifier==0.3.0")
    scorer = create_scorer("toxic-bilstm")
    scorer.load()
    yield scorer
    scorer.close()


# ------------------------------------------------------------ numpy reference

def _keras_reference(texts, tokenizer) -> np.ndarray:
    """The Keras forward pass written out from the .h5 arrays and Keras' LSTM equations, in float64."""
    import h5py

    from cai.safety.bilstm import model_files

    weights_path, _ = model_files()
    with h5py.File(weights_path, "r") as f:
        w = {key: np.asarray(f[key], dtype=np.float64) for key in (
            "layers/embedding/vars/0",
            *(f"layers/bidirectional/{d}/cell/vars/{i}" for d in ("forward_layer", "backward_layer") for i in range(3)),
            "layers/dense/vars/0", "layers/dense/vars/1", "layers/dense_1/vars/0", "layers/dense_1/vars/1")}

    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    def lstm(xs, direction):  # Keras LSTMCell: z = x K + h R + b; gates i, f, c, o
        kernel, recurrent, bias = (w[f"layers/bidirectional/{direction}/cell/vars/{i}"] for i in range(3))
        units = recurrent.shape[0]
        h, c, outs = np.zeros(units), np.zeros(units), []
        for x in xs:
            z = x @ kernel + h @ recurrent + bias
            i, f, g, o = (z[k * units:(k + 1) * units] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outs.append(h)
        return np.array(outs)

    ids = tokenizer.encode(texts)
    rows = []
    for seq in ids:
        xs = w["layers/embedding/vars/0"][seq]                    # (100, 50)
        fwd = lstm(xs, "forward_layer")
        bwd = lstm(xs[::-1], "backward_layer")[::-1]               # go_backwards, re-aligned in time
        pooled = np.concatenate([fwd, bwd], axis=1).max(axis=0)    # GlobalMaxPooling1D over [fwd | bwd]
        hidden = np.maximum(0, pooled @ w["layers/dense/vars/0"] + w["layers/dense/vars/1"])
        rows.append(sigmoid(hidden @ w["layers/dense_1/vars/0"] + w["layers/dense_1/vars/1"]))
    return np.array(rows)


def test_bilstm_matches_numpy_keras_reference(bilstm):
    from cai.safety.bilstm import COLUMNS

    ours = np.array([[row[c] for c in COLUMNS] for row in bilstm.score(TEXTS)])
    reference = _keras_reference(TEXTS, bilstm.tokenizer)
    assert ours.shape == (len(TEXTS), 6)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_bilstm_orders_rude_far_above_polite(bilstm):
    polite, rude = bilstm.score([THANKS, RUDE])
    assert rude["toxicity"] > 0.5 and rude["insult"] > 0.5
    assert polite["toxicity"] < 0.1
    assert bilstm.columns[0] == "toxicity" and set(polite) == set(bilstm.columns)


def test_bilstm_batches_equal_one_by_one(bilstm):
    batched = bilstm.score(TEXTS, batch_size=3)
    single = [bilstm.score([t], batch_size=1)[0] for t in TEXTS]
    for b, s in zip(batched, single):
        assert b.keys() == s.keys()
        assert all(abs(b[k] - s[k]) < 1e-6 for k in b)


def test_bilstm_empty_inputs(bilstm):
    assert bilstm.score([]) == []
    (row,) = bilstm.score([""])
    assert all(0.0 <= v <= 1.0 for v in row.values())
    assert row["toxicity"] < 0.5


def test_keras_tokenizer_reproduces_keras_preprocessing(bilstm):
    tok = bilstm.tokenizer
    # 'the', 'to', 'of' are the corpus' top words: ids 1, 2, 3. Filters split "," and "!".
    assert tok.texts_to_sequences(["The,to OF!"]) == [[1, 2, 3]]
    assert tok.words("Hello\tWORLD...  it's") == ["hello", "world", "it's"]
    # Words ranked >= num_words are dropped (no oov token), as Keras does.
    assert tok.num_words == 20000 and max(tok.word_index.values()) == 19999
    assert tok.texts_to_sequences(["zxqvunknownword"]) == [[]]
    padded = tok.pad([[5, 6], list(range(1, 151)), []], maxlen=100)
    assert padded.shape == (3, 100)
    assert padded[0, :98].tolist() == [0] * 98 and padded[0, 98:].tolist() == [5, 6]   # pre-padding
    assert padded[1].tolist() == list(range(51, 151))                                    # pre-truncation
    assert not padded[2].any()


def test_tokenizer_pickle_refuses_foreign_classes(tmp_path):
    import pickle

    from cai.safety.bilstm import KerasTokenizer

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(os.system))
    with pytest.raises(CaiError, match="not a readable Keras tokenizer"):
        KerasTokenizer.from_pickle(path)


# ------------------------------------------------------------ bias heuristic

@pytest.mark.parametrize("text, count", [
    ("The cat sat on the mat.", 0),
    ("He is always late.", 1),
    ("Never say never.", 1),                                           # each indicator at most once
    ("Nevertheless, it is atypical.", 0),                              # whole words only
    ("All Women are naturally better cooks, a typical stereotype.", 4),
    ("ALL MEN always lie; all men never listen.", 3),
    ("That is a tired stereotypes argument", 1),                       # plural form counts
    ("Always. Never. Typical! Naturally... all   women, all men, stereotype", 7),
])
def test_bias_counts(text, count):
    (row,) = create_scorer("bias").score([text])
    assert row == {"bias_count": float(count), "bias": min(1.0, count / 5), "biased": float(count > 2)}


def test_bias_custom_indicators():
    scorer = create_scorer("bias", indicators=["obviously", "everyone knows"])
    assert scorer.score(["Obviously, EVERYONE  knows that. Always."])[0]["bias_count"] == 2.0
    assert create_scorer("bias", indicators="obviously, clearly").indicators == ("obviously", "clearly")


# ------------------------------------------------------------ registry and errors

def test_registry_lists_names_for_unknown_scorer():
    with pytest.raises(CaiError) as err:
        create_scorer("nope")
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in SCORERS)


def test_registry_names_pip_command_for_missing_dependency(monkeypatch):
    real = safety_base._installed
    monkeypatch.setattr(safety_base, "_installed", lambda m: m not in ("detoxify", "toxic_classifier") and real(m))
    with pytest.raises(CaiError, match=r"pip install detoxify"):
        create_scorer("detoxify")
    with pytest.raises(CaiError, match=r"pip install --no-deps toxic-comment-classifier==0\.3\.0") as err:
        create_scorer("toxic-bilstm")
    assert "\n" not in str(err.value)


def test_bilstm_load_without_package_is_one_line(monkeypatch):
    from cai.safety import bilstm as bilstm_module

    monkeypatch.setattr(bilstm_module.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(CaiError, match=r"pip install --no-deps toxic-comment-classifier==0\.3\.0"):
        bilstm_module.model_files()


def test_registry_rejects_unknown_option():
    with pytest.raises(CaiError, match="no option 'colour'.*indicators"):
        create_scorer("bias", colour="red")


def test_score_rejects_non_strings_and_bad_batch_size():
    scorer = create_scorer("bias")
    with pytest.raises(CaiError, match="text 1 is NoneType"):
        scorer.score(["ok", None])
    with pytest.raises(CaiError, match="batch size"):
        scorer.score(["ok"], batch_size=0)


def test_bilstm_restores_torch_threads(bilstm):
    import torch

    before = torch.get_num_threads()
    bilstm.score([RUDE])
    assert torch.get_num_threads() == before
