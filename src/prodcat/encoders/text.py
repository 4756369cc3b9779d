"""Title encoders: bag of words ("bow"), TF-IDF ("tfidf") and MiniLM sentence embeddings ("minilm").

Bag of words and TF-IDF split titles into words with the one tokeniser (`prodcat.encoders.words`,
shared with the title head and the gate) and learn their vocabulary from the training titles, so
they are fitted (`fit`) and saved as JSON (`to_json` / `from_json`: plain data, never pickle, so
loading a model file cannot run code). Their output is sparse: a catalogue's vocabulary has tens
of thousands of words and a title uses ten of them.

MiniLM (all-MiniLM-L6-v2, 384 values, L2-normalised) runs as ONNX with the `tokenizers` library:
neither torch nor transformers is imported on that path. The sentence-transformers model is the
`backend="torch"` reference it is tested against. Given `onnx_file` (a model folder's copy, with
tokenizer.json and sentence_bert_config.json beside it) it runs from that folder alone, without the
weights package: the weights hash comes from the export's metadata.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

import prodcat
from prodcat.paths import default_onnx_dir

from .base import (
    TITLE_BATCH,
    Backend,
    TextEncoder,
    batches,
    check_backend,
    check_positive_int,
    checked_session,
    file_sha256,
    has_metadata,
    not_fitted_error,
    onnx_metadata,
    open_or_export,
    resolve_threads,
    short_hash,
    unit_rows,
)
from .vectorizer import WordVectorizer
from .weights import MINILM_DIM, minilm_max_seq_length, minilm_model_dir
from .words import DEFAULT_NGRAMS, TOKEN_PATTERN, make_vectorizer

if TYPE_CHECKING:
    import onnxruntime
    import scipy.sparse
    import tokenizers

# scipy is imported inside the bag-of-words methods, scikit-learn only to fit them (training):
# the MiniLM prediction path (and a server's start) should not pay for either.

# Bump when this module changes the numbers an encoder returns for the same fitted state/weights.
CODE_REVISION = "v1"
OPSET = 17  # keep equal to export.OPSET
JSON_FORMAT = 1


def _check_ngram_range(ngram_range: Sequence[int]) -> tuple[int, int]:
    """Validate an (min_n, max_n) pair."""
    values = tuple(ngram_range)
    if (
        len(values) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        or not 1 <= values[0] <= values[1]
    ):
        raise ValueError(
            f"ngram_range={ngram_range!r} is not valid; expected (min_n, max_n) with "
            "1 <= min_n <= max_n, e.g. (1, 2) for words and word pairs"
        )
    return values[0], values[1]


def _check_min_df(min_df: float) -> int | float:
    """min_df is a count of titles (int >= 1) or a share of them (float in (0, 1])."""
    if isinstance(min_df, bool) or not isinstance(min_df, int | float):
        raise ValueError(
            f"min_df={min_df!r} is not valid; expected an int >= 1 or a float in (0, 1]"
        )
    if isinstance(min_df, int) and min_df < 1:
        raise ValueError(f"min_df={min_df} is not valid; an int min_df must be >= 1")
    if isinstance(min_df, float) and not 0.0 < min_df <= 1.0:
        raise ValueError(f"min_df={min_df} is not valid; a float min_df must be in (0, 1]")
    return min_df


class SparseTextEncoder(TextEncoder):
    """Shared logic of the vocabulary-based encoders; subclasses choose the vectorizer."""

    kind: ClassVar[str]
    default_ngram_range: ClassVar[tuple[int, int]]

    def __init__(
        self,
        *,
        ngram_range: Sequence[int] | None = None,
        min_df: float = 1,
        token_pattern: str = TOKEN_PATTERN,
        lowercase: bool = True,
    ) -> None:
        self.name = self.kind
        self.ngram_range = _check_ngram_range(
            self.default_ngram_range if ngram_range is None else ngram_range
        )
        self.min_df = _check_min_df(min_df)
        self.token_pattern = token_pattern
        self.lowercase = bool(lowercase)
        self._vectorizer: WordVectorizer | None = None
        self._version: str | None = None

    # -- configuration -------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The constructor options, JSON-ready."""
        return {
            "ngram_range": list(self.ngram_range),
            "min_df": self.min_df,
            "token_pattern": self.token_pattern,
            "lowercase": self.lowercase,
        }

    def _fitted_vectorizer(self, vocabulary: list[str], idf: np.ndarray | None) -> WordVectorizer:
        """The fitted vectoriser from a saved vocabulary (and idf): no scikit-learn."""
        return WordVectorizer.from_terms(
            self.kind,
            vocabulary,
            idf=idf,
            ngram_range=self.ngram_range,
            token_pattern=self.token_pattern,
            lowercase=self.lowercase,
            dtype=np.float32,
        )

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, texts: Sequence[str]) -> Self:
        """Learn the vocabulary (and idf) from the training titles only."""
        texts = self.check_texts(texts)
        vectorizer = make_vectorizer(  # scikit-learn fits (training); WordVectorizer applies
            self.kind,
            ngram_range=self.ngram_range,
            min_df=self.min_df,
            token_pattern=self.token_pattern,
            lowercase=self.lowercase,
            dtype=np.float32,
        )
        vectorizer.fit(texts)
        self._vectorizer = WordVectorizer.from_sklearn(vectorizer)
        self._version = None
        return self

    def _fitted(self) -> WordVectorizer:
        if self._vectorizer is None:
            raise not_fitted_error(
                f"this {type(self).__name__} ({self.kind!r}) is not fitted yet; call "
                f".fit(training_titles) first, or load a fitted one with "
                f"{type(self).__name__}.from_json(data)"
            )
        return self._vectorizer

    @property
    def is_fitted(self) -> bool:
        """Whether `fit` or `from_json` has given this encoder a vocabulary."""
        return self._vectorizer is not None

    @property
    def vocabulary(self) -> list[str]:
        """Terms in column order."""
        mapping: dict[str, int] = self._fitted().vocabulary_
        terms = [""] * len(mapping)
        for term, column in mapping.items():
            terms[column] = term
        return terms

    @property
    def dim(self) -> int:
        """Size of the vocabulary (one column per term)."""
        return len(self._fitted().vocabulary_)

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, items: Sequence[str]) -> scipy.sparse.csr_matrix:
        """float32 CSR (N, dim); a row is all zero when the title has no term of the vocabulary."""
        import scipy.sparse

        texts = self.check_texts(items)
        matrix = self._fitted().transform(texts)
        return scipy.sparse.csr_matrix(matrix, dtype=np.float32)

    def is_all_zero(self, texts: Sequence[str]) -> np.ndarray:
        """Per title, True when it has no known term: a kind of product never seen in training.

        The prototype's rule: such titles carry no signal for the text model, so predictions for
        them must rest on the image (or be flagged as a possibly new category).
        """
        matrix = self.encode(texts)
        return np.asarray(np.diff(matrix.indptr) == 0)

    # -- persistence and versioning ------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """Everything the outputs depend on, JSON-ready (subclasses add idf)."""
        return {
            "kind": self.kind,
            "format": JSON_FORMAT,
            "code_revision": CODE_REVISION,
            "params": self.params(),
            "vocabulary": self.vocabulary,
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict that `from_json` turns back into an identical encoder."""
        return {**self._state(), "prodcat_version": prodcat.__version__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Rebuild a fitted encoder from `to_json()` output (after json.dumps/loads)."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a dict from to_json(), got {type(data).__name__}")
        if data.get("kind") != cls.kind:
            raise ValueError(
                f"this is a saved {data.get('kind')!r} encoder, not {cls.kind!r}; load it with the "
                f"matching class (BowEncoder for 'bow', TfidfEncoder for 'tfidf')"
            )
        if data.get("format") != JSON_FORMAT:
            raise ValueError(
                f"saved encoder format {data.get('format')!r} is not supported by this prodcat "
                f"(it reads format {JSON_FORMAT}); fit the encoder again"
            )
        missing = [key for key in ("params", "vocabulary") if key not in data]
        if missing:
            raise ValueError(f"the saved encoder lacks the keys {missing}; it is incomplete")
        params = dict(data["params"])
        lacking = sorted({"ngram_range", "min_df", "token_pattern", "lowercase"} - set(params))
        if lacking:
            raise ValueError(f"the saved encoder's params lack {lacking}; it is incomplete")
        encoder = cls(
            ngram_range=params["ngram_range"],
            min_df=params["min_df"],
            token_pattern=params["token_pattern"],
            lowercase=params["lowercase"],
        )
        encoder._vectorizer = encoder._restore(list(data["vocabulary"]), data)
        return encoder

    def _restore(self, vocabulary: list[str], data: dict[str, Any]) -> WordVectorizer:
        return self._fitted_vectorizer(vocabulary, None)

    @property
    def version(self) -> str:
        """kind + hash of the vocabulary, params (and idf): a refit on other titles changes it."""
        if self._version is None:
            blob = json.dumps(self._state(), sort_keys=True, ensure_ascii=True)
            self._version = f"{self.kind}/{short_hash(blob, 16)}"
        return self._version


class BowEncoder(SparseTextEncoder):
    """Binary bag of words: 1.0 where the title contains the term."""

    kind = "bow"
    default_ngram_range = DEFAULT_NGRAMS["bow"]


class TfidfEncoder(SparseTextEncoder):
    """TF-IDF of words and word pairs, L2-normalised per title (sklearn's defaults otherwise)."""

    kind = "tfidf"
    default_ngram_range = DEFAULT_NGRAMS["tfidf"]

    def _state(self) -> dict[str, Any]:
        idf = np.asarray(self._fitted().idf_, dtype=np.float64)  # a tfidf one always has it
        return {**super()._state(), "idf": idf.tolist()}

    def _restore(self, vocabulary: list[str], data: dict[str, Any]) -> WordVectorizer:
        if "idf" not in data or len(data["idf"]) != len(vocabulary):
            raise ValueError(
                "the saved tfidf encoder needs an 'idf' list as long as its vocabulary "
                f"({len(vocabulary)} terms); it is incomplete"
            )
        return self._fitted_vectorizer(vocabulary, np.asarray(data["idf"], dtype=np.float32))


# -- MiniLM ------------------------------------------------------------------------------------


class MiniLMEncoder(TextEncoder):
    """Title -> 384 float32 values (L2-normalised mean of MiniLM-L6-v2's token states).

    Options: `onnx_dir`, `threads`, `batch_size` (titles per network call, default TITLE_BATCH),
    `backend` ("onnx", or "torch" = sentence-transformers, the reference) and `onnx_file` (run
    from this export, e.g. a model folder's copy; its folder holds the tokenizer files too).
    """

    name = "minilm"
    # What the tokenizer needs besides the network, in the weights package or beside `onnx_file`.
    TOKENIZER_FILES = ("tokenizer.json", "sentence_bert_config.json")

    def __init__(
        self,
        *,
        onnx_dir: str | Path | None = None,
        threads: int | None = None,
        batch_size: int = TITLE_BATCH,
        backend: Backend = "onnx",
        onnx_file: str | Path | None = None,
    ) -> None:
        self.onnx_file = None if onnx_file is None else Path(onnx_file)
        # The tokenizer's folder: the weights package's, or the one the export was copied into.
        self.model_dir = minilm_model_dir() if self.onnx_file is None else self.onnx_file.parent
        if self.onnx_file is not None:
            self._check_folder(self.onnx_file)
        self.max_seq_length = minilm_max_seq_length(self.model_dir)
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else default_onnx_dir()
        self.threads = resolve_threads(threads)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.backend = check_backend(backend)
        self._version: str | None = None
        self._runner: Callable[[list[str]], np.ndarray] | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """384."""
        return MINILM_DIM

    def _check_folder(self, onnx_file: Path) -> None:
        """Refuse an `onnx_file` that is not MiniLM's export, or lacks its tokenizer files."""
        if not onnx_file.is_file():
            raise ValueError(f"minilm: its ONNX file {onnx_file} does not exist")
        missing = [n for n in self.TOKENIZER_FILES if not (self.model_dir / n).is_file()]
        if missing:
            raise ValueError(
                f"{self.model_dir} lacks {missing}: MiniLM's tokenizer files must sit beside "
                f"{onnx_file.name}; copy the whole model folder"
            )
        meta = onnx_metadata(onnx_file)
        if meta.get("encoder") != "minilm" or not meta.get("weights_sha256"):
            raise ValueError(
                f"{onnx_file} is not an export of minilm: its metadata names encoder "
                f"{meta.get('encoder')!r} (weights_sha256 "
                f"{'present' if meta.get('weights_sha256') else 'missing'})"
            )
        if meta.get("tokenizer_sha256") != self.tokenizer_sha256:
            raise ValueError(
                f"{self.model_dir / 'tokenizer.json'} is not the tokenizer {onnx_file.name} "
                "was exported with (its sha256 differs from the export's tokenizer_sha256)"
            )

    @property
    def weights_sha256(self) -> str:
        """Content hash of model.safetensors (from the export's metadata with `onnx_file`)."""
        if self.onnx_file is not None:
            return onnx_metadata(self.onnx_file)["weights_sha256"]
        return file_sha256(self.model_dir / "model.safetensors")

    @property
    def tokenizer_sha256(self) -> str:
        """Content hash of tokenizer.json (a new vocabulary changes every output)."""
        return file_sha256(self.model_dir / "tokenizer.json")

    def _version_for(self, runtime: str) -> str:
        return (
            f"minilm/all-MiniLM-L6-v2/w={self.weights_sha256[:16]}/"
            f"tok={self.tokenizer_sha256[:12]}/max{self.max_seq_length}/mean-l2/"
            f"{runtime}/{CODE_REVISION}"
        )

    @property
    def version(self) -> str:
        """e.g. "minilm/all-MiniLM-L6-v2/w=<sha16>/tok=<sha12>/max256/mean-l2/onnx17/v1"."""
        if self._version is None:
            self._version = self._version_for(f"onnx{OPSET}" if self.backend == "onnx" else "torch")
        return self._version

    @property
    def onnx_path(self) -> Path:
        """The exported transformer, named by a hash of the ONNX backend's version, or
        `onnx_file`."""
        if self.onnx_file is not None:
            return self.onnx_file
        return self.onnx_dir / f"minilm-{short_hash(self._version_for(f'onnx{OPSET}'))}.onnx"

    def encode(self, items: Sequence[str]) -> np.ndarray:
        """float32 (N, 384), unit length per row."""
        texts = self.check_texts(items)
        if not texts:
            return np.zeros((0, MINILM_DIM), dtype=np.float32)
        return self._get_runner()(texts)

    def _get_runner(self) -> Callable[[list[str]], np.ndarray]:
        with self._lock:
            if self._runner is None:
                self._runner = (
                    self._onnx_runner() if self.backend == "onnx" else self._torch_runner()
                )
            return self._runner

    def _onnx_runner(self) -> Callable[[list[str]], np.ndarray]:
        tokenizer = self._tokenizer()
        session = self._open_session()

        def run(texts: list[str]) -> np.ndarray:
            # Longest titles first, as sentence-transformers does: batches of similar length pad
            # less. Padding is masked out, so the order does not change the numbers.
            order = np.argsort([-len(text) for text in texts], kind="stable")
            out = np.empty((len(texts), MINILM_DIM), dtype=np.float32)
            for part in batches(len(texts), self.batch_size):
                index = order[part]
                out[index] = _embed_batch(session, tokenizer, [texts[i] for i in index])
            return out

        return run

    def _tokenizer(self) -> tokenizers.Tokenizer:
        """The fast tokenizer, set to truncate like sentence-transformers and pad per batch.

        tokenizer.json itself says "truncate at 128, pad everything to 128"; sentence-transformers
        overrides both (its max_seq_length, padding to the longest title of the batch).
        """
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        pad_token = "[PAD]"
        pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
        return tokenizer

    def _expected_metadata(self) -> dict[str, str]:
        return {"weights_sha256": self.weights_sha256, "tokenizer_sha256": self.tokenizer_sha256}

    def _open_session(self) -> onnxruntime.InferenceSession:
        def export(path: Path) -> None:
            from .export import export_minilm

            export_minilm(path, version=self.version)

        expected = self._expected_metadata()
        if self.onnx_file is not None:  # a model folder's copy: never exported again
            return checked_session(self.onnx_file, self.threads, expected)
        return open_or_export(
            self.onnx_path, threads=self.threads, expected_metadata=expected, export=export
        )

    def files(self) -> dict[str, Path]:
        """The export ("model.onnx", exported now if need be) and the tokenizer's files."""
        if not has_metadata(self.onnx_path, self._expected_metadata()):
            self._open_session()  # exports it
        return {
            "model.onnx": self.onnx_path,
            **{name: self.model_dir / name for name in self.TOKENIZER_FILES},
        }

    def _torch_runner(self) -> Callable[[list[str]], np.ndarray]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(minilm_model_dir()), device="cpu")

        def run(texts: list[str]) -> np.ndarray:
            embeddings = model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,  # the model's own Normalize module already does it
                show_progress_bar=False,
            )
            return np.asarray(embeddings, dtype=np.float32)

        return run


def _embed_batch(
    session: onnxruntime.InferenceSession, tokenizer: tokenizers.Tokenizer, texts: list[str]
) -> np.ndarray:
    """Tokenize, run the transformer, mean-pool over real tokens and L2-normalise."""
    encodings = tokenizer.encode_batch(texts)
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    token_type_ids = np.array([e.type_ids for e in encodings], dtype=np.int64)
    (hidden,) = session.run(
        ["last_hidden_state"],
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        },
    )
    mask = attention_mask[:, :, None].astype(np.float32)
    summed = (np.asarray(hidden, dtype=np.float32) * mask).sum(axis=1)
    pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    return unit_rows(pooled)
