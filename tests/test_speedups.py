"""monitor/_speedups.c gives exactly the values of the Python code it stands in for.

Band keys are stored, so a compiled loop that differed from the Python one would split
stories between a store written with it and one written without (the Docker image has no
C compiler). Each function is checked against its Python twin on hypothesis input, and
whole fingerprints of real bulletins are compared with a process that has no extension.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import gen
from monitor import hashset, identity

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
WORDS = st.lists(st.text(alphabet="abcдеё0123456789_", min_size=1, max_size=6), max_size=60)
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


def _compiler() -> bool:
    return bool(shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]))


def test_the_extension_is_built_where_a_compiler_is() -> None:
    if not _compiler():
        pytest.skip("no C compiler here: monitor runs on its Python code")
    assert identity._speedups is not None, "a C compiler is here, but monitor/_speedups.c was not built (setup.py)"


speedups = pytest.mark.skipif(identity._speedups is None, reason="monitor/_speedups.c is not built here")


@speedups
@given(st.text(max_size=300).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)))
def test_hash64_is_blake2b(text: str) -> None:
    assert identity._speedups.hash64(text) == identity._py_hash64(text)


@speedups
@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 255, 256, 257, 1000])
def test_hash64_across_block_boundaries(size: int) -> None:
    text = "x" * size
    assert identity._speedups.hash64(text) == identity._py_hash64(text)


@speedups
@given(WORDS)
def test_word_sets_are_the_python_sets(words: list[str]) -> None:
    shingles, content = identity._word_sets(words)
    assert hashset.values(shingles) == sorted(identity._py_shingle_hashes(words))
    assert hashset.values(content) == sorted(identity._content_words(words))


@speedups
@given(st.lists(U64, max_size=300), st.lists(U64, max_size=300))
def test_packed_sets_are_sets(a: list[int], b: list[int]) -> None:
    pa, pb = hashset.pack(a), hashset.pack(iter(b))
    assert hashset.values(pa) == sorted(set(a)) and hashset.size(pa) == len(set(a))
    assert hashset.shared(pa, pb) == len(set(a) & set(b))
    sa, sb = set(a), set(b)
    assert identity.jaccard(pa, pb) == (len(sa & sb) / len(sa | sb) if sa and sb else 0.0)
    assert (pa == hashset.pack(reversed(a))) and hashset.from_wire(hashset.to_wire(pa)) == pa


@speedups
def test_word_sets_ask_for_words_not_learned() -> None:
    assert identity._speedups.word_sets(["never-learned-word"], {}) is None
    with pytest.raises(TypeError):
        identity._speedups.word_sets(["w"], {"w": b"short"})


@speedups
@given(st.frozensets(U64, max_size=120))
def test_band_keys_are_the_python_keys(hashes: frozenset[int]) -> None:
    assert identity._band_keys(hashset.pack(hashes)) == identity._py_band_keys(hashes)


@speedups
def test_what_is_not_a_packed_set_is_refused() -> None:
    with pytest.raises(OverflowError):
        hashset.pack([-1])
    with pytest.raises(TypeError):
        identity._speedups.band_keys(b"1234567", identity.BANDS, identity.ROWS)
    with pytest.raises(TypeError):
        identity._speedups.shared(b"", frozenset())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        identity._speedups.band_keys(hashset.pack([1]), 100, 100)


_FINGERPRINTS = """
import json, pickle, sys
from pathlib import Path
if sys.argv[1] == "python":
    sys.modules["monitor._speedups"] = None  # the import fails, as where nothing was compiled
from monitor import bulletin, hashset, identity
assert (identity._speedups is None) == (sys.argv[1] == "python")
out, scores, before = [], [], []
for path in sorted(p for folder in sys.argv[2:] for p in Path(folder).iterdir()):
    now = [(item, identity.fingerprint(item)) for item in bulletin.parse(path.read_bytes()).items]
    for item, fp in now:
        assert pickle.loads(pickle.dumps(fp)) == fp
        out.append([fp.text_hash, fp.paragraph_keys, fp.band_keys, hashset.values(fp.shingles),
                    hashset.values(fp.lead_shingles), fp.date_keys, fp.length, hashset.values(fp.words)])
        # Against the previous bulletin's items: what decide() measures, revisions among them.
        scores += [identity.similarity(fp, old, len(item.paragraphs), len(was.paragraphs)) for was, old in before]
    before = now
print(json.dumps([out, scores]))
"""


@speedups
def test_fingerprints_are_the_same_without_the_extension(tmp_path: Path) -> None:
    gen.write(tmp_path, 40, article_paragraphs=3)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [json.loads(subprocess.run([sys.executable, "-c", _FINGERPRINTS, mode, str(SEEDS), str(tmp_path)],
                                      env=env, capture_output=True, text=True, check=True).stdout)
            for mode in ("python", "compiled")]
    (fingerprints, scores), _ = runs
    assert len(fingerprints) > 200 and any(scores) and runs[0] == runs[1]
