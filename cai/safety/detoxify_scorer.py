"""`detoxify`: the Detoxify BERT/RoBERTa/XLM-R toxicity models, through the real library.

Detoxify downloads its checkpoints (and the hub config/tokenizer they name) at
first use, so offline it needs `checkpoint=PATH`, a torch dict holding
`config.arch.args` {model_type, model_name, tokenizer_name, num_classes},
`config.dataset.args.classes` and `state_dict`. Detoxify loads the config and
tokenizer with `from_pretrained(model_type)`: for the published checkpoints that
is a hub name, so offline also pass `huggingface_config_path`, a folder holding
that model's config and tokenizer. We call Detoxify itself rather than copy its
loading code, so real checkpoints behave exactly as upstream.
"""

from __future__ import annotations

import os
from pathlib import Path

from cai.errors import CaiError
from cai.safety.base import Scorer

INSTALL = "pip install detoxify  (or pip install -e '.[detoxify]')"
# detoxify's standard class names (detoxify.load_checkpoint applies the same map).
_RENAMES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
MODEL_TYPES = ("original", "unbiased", "multilingual", "original-small", "unbiased-small")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].strip()}" if text else type(exc).__name__


class DetoxifyScorer(Scorer):
    """Columns: `toxicity` first, then the checkpoint's other classes (known after load())."""

    name = "detoxify"
    columns = ("toxicity",)
    requires = (("detoxify", INSTALL),)
    default_batch_size = 32

    def __init__(self, model_type: str = "original", checkpoint: str | os.PathLike | None = None,
                 huggingface_config_path: str | os.PathLike | None = None, device: str = "cpu"):
        if model_type not in MODEL_TYPES:
            raise CaiError(f"unknown detoxify model_type {model_type!r}; choose one of: {', '.join(MODEL_TYPES)}")
        self.model_type = model_type
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        self.config_path = Path(huggingface_config_path).expanduser() if huggingface_config_path else None
        self.device = device
        self.detoxify = None

    @property
    def loaded(self) -> bool:
        return self.detoxify is not None

    def load(self) -> None:
        if self.detoxify is not None:
            return
        self.check_requirements()
        if self.config_path is not None and not self.config_path.is_dir():
            raise CaiError(f"detoxify huggingface_config_path {self.config_path}: no such folder")
        if self.checkpoint is None:
            self.detoxify = self._load_published()
        else:
            self.detoxify = self._load_checkpoint(self.checkpoint)
        names = list(self.detoxify.class_names)
        if "toxicity" not in names:
            where = self.checkpoint or self.model_type
            raise CaiError(f"detoxify {where}: classes {names} have no 'toxic'/'toxicity' class")
        self.columns = ("toxicity", *[n for n in names if n != "toxicity"])

    def _load_checkpoint(self, path: Path):
        from detoxify import Detoxify

        if not path.is_file():
            raise CaiError(f"detoxify checkpoint {path}: no such file")
        try:
            if self.config_path is None:
                return Detoxify(model_type=self.model_type, checkpoint=str(path), device=self.device)
            return self._load_with_config_folder(path)
        except ValueError as exc:
            if "needs to contain the config" in str(exc):
                raise CaiError(f"{path}: not a detoxify checkpoint (needs 'config' and 'state_dict')") from exc
            raise CaiError(f"{path}: detoxify could not load it: {_one_line(exc)}") from exc
        except (KeyError, TypeError) as exc:
            raise CaiError(f"{path}: not a detoxify checkpoint (config lacks {_one_line(exc)})") from exc
        except OSError as exc:
            raise CaiError(f"{path}: detoxify could not load the config/tokenizer it names ({_one_line(exc)}); "
                           "offline, pass huggingface_config_path=FOLDER with that model's config "
                           "and tokenizer") from exc
        except Exception as exc:  # pickle or state-dict mismatches: still one line for the user
            raise CaiError(f"{path}: detoxify could not load it: {_one_line(exc)}") from exc

    def _load_with_config_folder(self, path: Path):
        """Detoxify's own loader, with the checkpoint's model_type pointed at the local folder.

        detoxify 0.5.4 reads the config from `model_type` (a hub name) even when given
        `huggingface_config_path`, so offline its own option still reaches for the hub.
        """
        import torch
        from detoxify import Detoxify
        from detoxify import detoxify as upstream

        loaded = torch.load(path, map_location=self.device, weights_only=False)
        if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
            raise ValueError("Checkpoint needs to contain the config it was trained with as well as the state dict")
        args = dict(loaded["config"]["arch"]["args"], model_type=str(self.config_path))
        model, tokenizer = upstream.get_model_and_tokenizer(
            **args, state_dict=loaded["state_dict"], huggingface_config_path=str(self.config_path))
        detoxify = Detoxify.__new__(Detoxify)
        detoxify.model, detoxify.tokenizer, detoxify.device = model.to(self.device), tokenizer, self.device
        detoxify.class_names = [_RENAMES.get(c, c) for c in loaded["config"]["dataset"]["args"]["classes"]]
        return detoxify

    def _load_published(self):
        import torch
        from detoxify import Detoxify
        from detoxify.detoxify import MODEL_URLS

        url = MODEL_URLS[self.model_type]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        advice = (f"detoxify downloads its {self.model_type!r} weights ({url}) and their hub config at first use; "
                  "offline, download that file elsewhere and pass --checkpoint PATH "
                  "(and --huggingface-config-path FOLDER for its config and tokenizer)")
        if cached.is_file():
            return self._load_checkpoint(cached)
        if _offline():
            raise CaiError(f"{advice}; this machine is offline (HF_HUB_OFFLINE)")
        try:
            return Detoxify(model_type=self.model_type, device=self.device,
                            huggingface_config_path=str(self.config_path) if self.config_path else None)
        except Exception as exc:
            raise CaiError(f"{advice}; the download failed: {_one_line(exc)}") from exc

    def _score_batch(self, texts: list[str]) -> list[dict[str, float]]:
        import torch

        with torch.inference_mode():
            raw = self.detoxify.predict(texts)
        # Detoxify squeezes a batch of one down to plain floats.
        columns = {name: (v if isinstance(v, list) else [v]) for name, v in raw.items()}
        return [{name: float(columns[name][i]) for name in self.columns} for i in range(len(texts))]

    def close(self) -> None:
        self.detoxify = None
