"""MMS-style language adapters: one loaded model serving several languages (e.g. facebook/mms-1b-all).

An adapter checkpoint has `config.adapter_attn_dim` set, a nested vocab.json ({language: {token:
id}}; the tokenizer's `target_lang` picks one) and, per language, `adapter.<lang>.safetensors` next
to the model: a small bottleneck after every transformer layer plus the lm_head, whose size is that
language's vocabulary. Everything else is shared, so one model in memory serves every language:

- the checkpoint's languages are the nested vocabulary's keys; for a local directory only those
  with an adapter file, plus the tokenizer's saved language when the main weights fit it;
- a language's weights are read once (the file, or the hub cache first: hub.py), checked against
  the model's adapter parameters, put in the model's dtype and device and kept; its ModelInfo
  (its vocabulary, blank = its pad id, delimiter) is built once;
- `using(language)` around a forward: batches of the active language run concurrently on the model
  workers; a batch of another language waits until none is in flight, then switches (per batch, a
  pointer swap: `param.data = cached`, four tensors per layer and the lm_head), and new batches of
  the active language queue behind it, so no language starves.

Plain windows run in the default language (`--language`, else the checkpoint's own), so uploads and
sessions that name no language behave as with a monolingual checkpoint.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .checkpoint import is_local
from .hub import load_from_hub
from .info import ModelInfo, ModelLoadError, word_delimiter
from .inputs import LanguageInput

ADAPTER_FILES = ("adapter.{}.safetensors", "adapter.{}.bin")
R = TypeVar("R")

#: ISO 639-1 codes (what Deepgram-style clients send: "fr", "fr-FR") -> the ISO 639-3 codes MMS uses.
ISO_639_3 = {
    "am": "amh", "ar": "ara", "bg": "bul", "bn": "ben", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan",
    "de": "deu", "el": "ell", "en": "eng", "es": "spa", "et": "est", "eu": "eus", "fi": "fin", "fr": "fra",
    "ga": "gle", "gl": "glg", "gu": "guj", "ha": "hau", "he": "heb", "hi": "hin", "hr": "hrv", "hu": "hun",
    "hy": "hye", "id": "ind", "is": "isl", "it": "ita", "ja": "jpn", "ka": "kat", "kk": "kaz", "km": "khm",
    "kn": "kan", "ko": "kor", "lt": "lit", "lv": "lav", "mk": "mkd", "ml": "mal", "mn": "mon", "mr": "mar",
    "mt": "mlt", "my": "mya", "ne": "npi", "nl": "nld", "pa": "pan", "pl": "pol", "pt": "por", "ro": "ron",
    "ru": "rus", "sk": "slk", "sl": "slv", "so": "som", "sq": "sqi", "sr": "srp", "sv": "swe", "sw": "swh",
    "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl", "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie",
    "yo": "yor", "zu": "zul",
}  # fmt: skip


def match_language(code: str, languages: Sequence[str]) -> str | None:
    """The entry of `languages` that `code` names: itself (any case), its base ("fr-FR" -> "fr"),
    or the ISO 639-3 code of a two-letter one ("fr" -> "fra", and "fra" names an entry "fr"); None if none."""
    by_lower = {lang.lower(): lang for lang in languages}
    for lang in languages:
        by_lower.setdefault(ISO_639_3.get(lang.lower(), ""), lang)
    by_lower.pop("", None)
    wanted = code.strip().lower().replace("_", "-")
    for candidate in dict.fromkeys((wanted, wanted.split("-")[0])):
        for form in (candidate, ISO_639_3.get(candidate, "")):
            if form in by_lower:
                return by_lower[form]
    return None


def language_list(languages: Sequence[str], limit: int | None = None) -> str:
    """`a, b, c` for messages (the first `limit`, then how many in all)."""
    if limit is not None and len(languages) > limit:
        return ", ".join(languages[:limit]) + f", ... ({len(languages)} in all)"
    return ", ".join(languages) or "none"


def nested_vocab(tokenizer: Any) -> dict[str, dict[str, int]] | None:
    """A multilingual tokenizer's {language: {token: id}}, or None for a flat vocabulary."""
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
        return vocab
    return None


class Adapters:
    """The languages of one adapter checkpoint and the switching of its shared model between them."""

    def __init__(
        self,
        name: str,
        config: Any,
        processor: Any,
        vocab: dict[str, dict[str, int]],
        languages: tuple[str, ...],
        default: str,
        main: str | None,
    ) -> None:
        tokenizer = getattr(processor, "tokenizer", processor)
        extractor = getattr(processor, "feature_extractor", processor)
        self.name = name
        self.languages = languages
        self.default = default
        self.main = main  # the language the checkpoint's own weights hold (used when it has no adapter file)
        self.switches = 0  # adapter swaps so far (each costs one pointer swap per adapter tensor)
        self._path = Path(name).expanduser() if is_local(name) else None
        self._vocab = vocab
        self._pad = str(getattr(tokenizer, "pad_token", None) or "<pad>")
        self._tokenizer = tokenizer
        self._facts = (
            config.pad_token_id,
            int(getattr(extractor, "sampling_rate", 16000)),
            tuple(config.conv_kernel),
            tuple(config.conv_stride),
            bool(getattr(extractor, "do_normalize", True)),
        )
        self._params: dict[str, Any] = {}
        self._weights: dict[str, dict[str, Any]] = {}
        self._infos: dict[str, ModelInfo] = {}
        self._main_weights: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self._gate = threading.Condition()
        self._active: str | None = None
        self._running = 0
        self._waiting: Counter[str] = Counter()
        self._local = threading.local()

    # ------------------------------------------------------------ discovery
    @classmethod
    def find(cls, model: Any, processor: Any, name: str, language: str | None = None) -> Adapters | None:
        """The adapters of a freshly loaded checkpoint, or None when it has none (monolingual).

        ModelLoadError when `language` is given and the checkpoint lacks it (the message lists what
        it has), or when a checkpoint has a per-language vocabulary but no adapter weights.
        """
        tokenizer = getattr(processor, "tokenizer", processor)
        vocab = nested_vocab(tokenizer)
        if vocab is None or getattr(model.config, "adapter_attn_dim", None) is None:
            if language:
                raise ModelLoadError(
                    f"--language {language}: {name!r} has no per-language adapters (it transcribes one "
                    "language; languages it has: none); leave --language out"
                )
            return None
        target = getattr(tokenizer, "target_lang", None)
        rows = int(model.lm_head.weight.shape[0])
        main = target if target in vocab and rows == _rows(vocab[target]) else None
        if is_local(name):
            folder = Path(name).expanduser()
            have = {lang for lang in vocab if any((folder / f.format(lang)).is_file() for f in ADAPTER_FILES)}
            languages = tuple(sorted(have | ({main} if main else set())))
        else:  # the hub has one adapter file per vocabulary entry (read on first use)
            languages = tuple(sorted(vocab))
        if not languages:
            raise ModelLoadError(f"{name!r} has a per-language vocabulary but no adapter.<lang>.safetensors files")
        if language:
            found = match_language(language, languages)
            if found is None:
                raise ModelLoadError(
                    f"--language {language}: {name!r} has no adapter for it; "
                    f"languages it has: {language_list(languages)}"
                )
            default = found
        else:
            default = main or (target if target in languages else languages[0])
        if default in vocab and target != default and hasattr(tokenizer, "set_target_lang"):
            tokenizer.set_target_lang(default)  # the processor's decoding matches the model's language
        return cls(name, model.config, processor, vocab, languages, default, main)

    def resolve(self, code: str) -> str | None:
        """The checkpoint language `code` names (see match_language), or None."""
        return match_language(code, self.languages)

    # ------------------------------------------------------------ model
    def attach(self, model: Any, precision: str) -> Any:
        """Put the (eval, on its device) model into `precision`, adapters kept float under int8, and
        switch it to the default language; returns the model to use."""
        from .precision import apply_precision

        model = _quantize_except_adapters(model) if precision == "int8" else apply_precision(model, precision)
        self._params = dict(model._get_adapters())
        self._main_weights = {k: p.data for k, p in self._params.items()}
        self._model = model
        self._swap(self.default)
        return model

    def weights(self, language: str) -> dict[str, Any]:
        """`language`'s adapter tensors in the model's dtype and device (read once, then cached)."""
        cached = self._weights.get(language)
        if cached is not None:
            return cached
        if language not in self.languages:
            raise ModelLoadError(f"no adapter for {language!r}; languages: {language_list(self.languages)}")
        with self._load_lock:
            if language not in self._weights:
                state = self._read(language)
                if state is None:
                    if language != self.main:
                        raise ModelLoadError(f"{self.name!r} has no adapter file for {language!r}")
                    state = dict(self._main_weights)
                self._weights[language] = state
        return self._weights[language]

    def info(self, language: str) -> ModelInfo:
        """The engine's facts in `language`: its vocabulary (as many ids as its lm_head has rows),
        blank = its pad token's id, delimiter = the tokenizer's word delimiter (or "|")."""
        known = self._infos.get(language)
        if known is not None:
            return known
        rows = int(self.weights(language)["lm_head.weight"].shape[0])
        vocab_map = self._vocab[language]
        tokens = ["<unused>"] * rows
        for token, idx in vocab_map.items():
            if 0 <= idx < rows:
                tokens[idx] = token
        pad_id, rate, kernels, strides, normalize = self._facts
        blank = vocab_map.get(self._pad, pad_id if pad_id is not None else 0)
        delimiter = word_delimiter(self._tokenizer, vocab_map)
        info = ModelInfo(
            name=self.name,
            vocab=tuple(tokens),
            blank_id=int(blank),
            delimiter_id=vocab_map.get(delimiter, -1),
            sample_rate=rate,
            conv_kernels=kernels,
            conv_strides=strides,
            do_normalize=normalize,
        )
        self._infos[language] = info
        return info

    # ------------------------------------------------------------ forwards
    def inside(self) -> bool:
        """True on a thread already running a forward under `using` (the nested call runs as is)."""
        return bool(getattr(self._local, "inside", False))

    def run(self, forward: Callable[[list[Any]], R], windows: Sequence[Any]) -> R:
        """`forward(inner windows)` in the windows' language (LanguageInput) or the default one (plain)."""
        languages = {w.language if isinstance(w, LanguageInput) else self.default for w in windows}
        if len(languages) != 1:
            raise ValueError(f"windows in one batch must share a language, got {sorted(languages)}")
        inner = [w.inner if isinstance(w, LanguageInput) else w for w in windows]
        with self.using(languages.pop()):
            return forward(inner)

    @contextmanager
    def using(self, language: str) -> Iterator[None]:
        """The model in `language` for the duration (see the module docstring for the rules)."""
        weights = self.weights(language)  # a first use reads the file here, not while holding the gate
        with self._gate:
            self._waiting[language] += 1
            while not self._may_enter(language):
                self._gate.wait()
            self._waiting[language] -= 1
            if self._active != language:
                self._swap(language, weights)
            self._running += 1
        self._local.inside = True
        try:
            yield
        finally:
            self._local.inside = False
            with self._gate:
                self._running -= 1
                self._gate.notify_all()

    def _may_enter(self, language: str) -> bool:
        if self._running == 0:
            return True
        others = any(n for lang, n in self._waiting.items() if n and lang != language)
        return self._active == language and not others

    def _swap(self, language: str, weights: dict[str, Any] | None = None) -> None:
        for key, tensor in (weights or self.weights(language)).items():
            self._params[key].data = tensor  # the lm_head may change shape: its rows are the vocabulary
        self._model.target_lang = language
        self._model.config.vocab_size = int(self._params["lm_head.weight"].shape[0])
        self._active = language
        self.switches += 1

    # ------------------------------------------------------------ files
    def _read(self, language: str) -> dict[str, Any] | None:
        """`language`'s adapter file, checked and converted; None when the checkpoint has none."""
        for pattern in ADAPTER_FILES:
            filename = pattern.format(language)
            if self._path is not None:
                local = self._path / filename
                where = str(local) if local.is_file() else None
            else:
                where = _hub_file(self.name, filename)
            if where is not None:
                return self._checked(where, _load_state(where))
        return None

    def _checked(self, where: str, state: dict[str, Any]) -> dict[str, Any]:
        expected = self._params
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ModelLoadError(
                f"{where}: adapter weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        rows = int(state["lm_head.weight"].shape[0])
        for key, tensor in state.items():
            want = tuple(expected[key].shape)
            if key.startswith("lm_head."):
                want = (rows, *want[1:])
            if tuple(tensor.shape) != want:
                raise ModelLoadError(f"{where}: {key} has shape {tuple(tensor.shape)}, the model needs {want}")
        return {k: t.to(device=expected[k].device, dtype=expected[k].dtype) for k, t in state.items()}


def _rows(vocab_map: dict[str, int]) -> int:
    return max(vocab_map.values(), default=-1) + 1


def _hub_file(name: str, filename: str) -> str | None:
    """A hub checkpoint's file from the cache, else after one probe (hub.py); None if the repo lacks it."""
    from transformers.utils.hub import cached_file

    def fetch(repo: str, **kwargs: Any) -> str | None:
        found: str | None = cached_file(repo, filename, **kwargs)
        return found

    try:
        return load_from_hub(name, fetch)  # type: ignore[no-any-return]
    except OSError:
        return None


def _load_state(path: str) -> dict[str, Any]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return dict(load_file(path))
    import torch

    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def _quantize_except_adapters(model: Any) -> Any:
    """int8 dynamic quantisation of every Linear layer but the adapters and the lm_head, which are
    swapped per language and so stay plain float parameters."""
    import warnings

    import torch

    def swapped(name: str) -> bool:
        return name == "lm_head" or ".adapter_layer" in f".{name}"

    spec = {
        name: torch.ao.quantization.default_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not swapped(name)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice
        quantize: Any = torch.ao.quantization.quantize_dynamic  # untyped in torch
        return quantize(model, spec, dtype=torch.qint8, inplace=True)
