import json
import random
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sparsecl.data import builtin
from sparsecl.data.batches import eval_windows, sample_batch
from sparsecl.data.sources import DocumentStream, load_documents
from sparsecl.data.corpus import split_domain
from sparsecl.data.tokens import TokenData, build
from sparsecl.errors import DataSourceError, EmptyDomainError, IntegrityError


def select_and_split(docs, max_chars, val_fraction, folder):
    files, counts = split_domain(docs, folder, max_chars, val_fraction)
    return {s: list(f) for s, f in files.items()}, counts


def test_split_is_deterministic_disjoint_and_keeps_duplicates_together(tmp_path):
    docs = [f"document number {i}" for i in range(500)] + ["a repeated document"] * 5
    a, counts = select_and_split(docs, 0, 0.2, tmp_path / "a")
    b, _ = select_and_split(list(reversed(docs)), 0, 0.2, tmp_path / "b")
    assert a == b
    assert not set(a["train"]) & set(a["val"])
    assert 50 < len(a["val"]) < 150
    assert sum(d == "a repeated document" for d in a["train"] + a["val"]) == 1 and counts["distinct"] == 501


def test_max_chars_caps_a_domain_and_counts_the_cut(tmp_path):
    docs = ["x" * 100 + str(i) for i in range(100)]
    split, counts = select_and_split(docs, 1000, 0.1, tmp_path)
    kept = split["train"] + split["val"]
    assert 1000 <= sum(map(len, kept)) < 1000 + 104
    assert counts["cut_documents"] == 100 - len(kept) and counts["cut_chars"] == sum(map(len, docs)) - sum(map(len, kept))


def test_shards_give_the_order_of_one_in_memory_sort(tmp_path):
    """A 60-character shard holds one or two documents: the merge of many shards must equal one shard."""
    docs = [f"doc {i} " * (i % 7 + 1) for i in range(300)] + ["doc 3 " * 4] * 3
    one, c1 = split_domain(docs, tmp_path / "one", 2000, 0.2)
    many, c2 = split_domain(docs, tmp_path / "many", 2000, 0.2, shard_chars=60)
    assert {s: list(f) for s, f in one.items()} == {s: list(f) for s, f in many.items()} and c1 == c2


def test_toy_domains_have_different_alphabets():
    a = set("".join(load_documents("alpha", {"source": "toy", "docs": 20}, 0)[0]))
    b = set("".join(load_documents("beta", {"source": "toy", "docs": 20}, 0)[0]))
    assert a != b


def test_files_source_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n\nthird, after a blank line\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": f"doc {i}"}) for i in range(3)))
    spec = {"source": "files", "paths": [str(tmp_path / "*.txt")]}
    docs, prov = load_documents("d", spec, 0)
    assert docs == ["first line\nsecond line\n\nthird, after a blank line\n"] and prov["files"] == 1
    assert load_documents("d", {**spec, "document": "paragraphs"}, 0)[0] == ["first line\nsecond line",
                                                                            "third, after a blank line"]
    assert load_documents("d", {**spec, "document": "lines"}, 0)[0] == ["first line", "second line",
                                                                       "third, after a blank line"]
    docs, _ = load_documents("d", {"source": "files", "paths": [str(tmp_path / "*.jsonl")], "format": "json",
                                   "text_field": "body"}, 0)
    assert docs == ["doc 0", "doc 1", "doc 2"]


def test_a_files_domain_of_three_text_files_is_three_documents_each_whole_in_one_split(tmp_path, toy_params):
    """The default: a text file is one document, so the split by content hash keeps each file on one side."""
    texts = {f"f{i}.txt": "\n".join(f"file {i} paragraph {j} " + "words " * 50 for j in range(30)) for i in range(3)}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    spec = {"source": "files", "paths": [str(tmp_path / "f*.txt")]}
    toy_params["data"]["domains"]["beta"] = spec
    toy_params["data"]["val_fraction"] = 0.5
    split, _ = select_and_split(DocumentStream("beta", spec, 0), 0, 0.5, tmp_path / "work")
    # these three land two in train, one in val (their content hashes): each file whole on its side
    assert sorted(split["train"]) == [texts["f1.txt"], texts["f2.txt"]] and split["val"] == [texts["f0.txt"]]
    beta = build(toy_params, tmp_path / "tokens")["domains"]["beta"]
    assert (beta["train"]["documents"], beta["val"]["documents"]) == (2, 1)
    assert {beta["train"]["chars"], beta["val"]["chars"]} == {sum(map(len, split["train"])), sum(map(len, split["val"]))}


def test_the_manifest_counts_dropped_documents_and_the_cap(tmp_path, toy_params):
    line = "a line of text number {} with a few more words to make it long enough".format
    (tmp_path / "a.txt").write_text("\n".join([line(i % 40) for i in range(100)] + [" "] * 5))
    toy_params["data"]["domains"]["beta"] = {"source": "files", "paths": [str(tmp_path / "a.txt")], "document": "lines"}
    toy_params["data"]["max_chars"] = 20000  # cuts the toy domains, not beta (40 lines of ~75 characters)
    domains = build(toy_params, tmp_path / "tokens")["domains"]
    assert domains["beta"]["read"] == {"documents": 100, "chars": sum(len(line(i % 40)) for i in range(100)),
                                       "empty": 5, "budget_reached": False, "duplicates": 60}
    assert domains["beta"]["max_chars_cut"] == {"documents": 0, "chars": 0}
    alpha = domains["alpha"]
    kept = alpha["train"]["chars"] + alpha["val"]["chars"]
    assert alpha["max_chars_cut"]["documents"] > 0 and kept + alpha["max_chars_cut"]["chars"] == alpha["read"]["chars"]


def test_a_budget_stops_reading_a_source(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(f"line {i}" for i in range(100)))
    spec = {"source": "files", "paths": [str(tmp_path / "a.txt")], "document": "lines"}
    stream = DocumentStream("d", {**spec, "max_documents": 7}, 0)
    assert list(stream) == [f"line {i}" for i in range(7)] and stream.read["budget_reached"]
    stream = DocumentStream("d", {**spec, "max_read_chars": 20}, 0)
    assert list(stream) == ["line 0", "line 1", "line 2", "line 3"]  # 24 characters: the one that crosses is kept


def test_the_stage_says_whether_a_budget_stopped_the_reading(tmp_path, toy_params, capsys):
    toy_params["data"]["domains"]["alpha"]["max_documents"] = 100
    toy_params["data"]["domains"]["beta"]["max_documents"] = 1000  # the toy domain has 150
    domains = build(toy_params, tmp_path)["domains"]
    assert domains["alpha"]["read"]["budget_reached"] and domains["alpha"]["read"]["documents"] == 100
    assert not domains["beta"]["read"]["budget_reached"] and domains["beta"]["read"]["documents"] == 150
    out = capsys.readouterr().out
    assert "alpha: reading stopped at its budget after 100 documents" in out
    assert "beta: the source ended before its budget {'max_documents': 1000} was reached" in out


def test_hf_source_code_path_with_a_local_dataset_folder(tmp_path):
    """The hub path needs a network; a local dataset folder goes through the same load_dataset call."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": f"row {i}"}) for i in range(4)))
    docs, prov = load_documents("d", {"source": "hf", "dataset": str(folder), "split": "train"}, 0)
    assert docs == [f"row {i}" for i in range(4)] and prov["dataset"] == str(folder)


def test_hf_source_streams_and_stops_reading_at_its_budget(tmp_path, monkeypatch):
    """A local dataset of 50,000 rows, budget 3,000 documents: the stream is opened with streaming=True (no
    download of the whole split) and no more rows are read than the budget and the last Arrow batch need."""
    import datasets

    from sparsecl.data import sources

    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "train.jsonl", "w") as fh:
        for i in range(50_000):
            fh.write(json.dumps({"text": f"row {i}"}) + "\n")
    real, calls, served = datasets.load_dataset, [], []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        ds = real(*args, **kwargs)
        inner = ds.with_format

        def with_format(fmt):
            f = inner(fmt)
            batches = f.iter

            def counted(batch_size):
                for table in batches(batch_size=batch_size):
                    served.append(table.num_rows)
                    yield table
            f.iter = counted
            return f
        ds.with_format = with_format
        return ds

    monkeypatch.setattr(datasets, "load_dataset", spy)
    stream = DocumentStream("d", {"source": "hf", "dataset": str(folder), "split": "train", "max_documents": 3000}, 0)
    docs = list(stream)
    assert docs == [f"row {i}" for i in range(3000)] and stream.read["budget_reached"]
    assert calls[0]["streaming"] is True
    assert sum(served) < 3000 + sources.ARROW_BATCH


def test_empty_domain_is_refused_with_its_name(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(EmptyDomainError, match="data.domains.legal"):
        load_documents("legal", {"source": "files", "paths": [str(tmp_path / "empty.txt")]}, 0)


def tokenize_stage(ws, params, monkeypatch, capsys) -> tuple[int, str]:
    """The tokenize stage's entry point in workspace `ws`, in this process (so a monkeypatch reaches it)."""
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(ws)
    monkeypatch.setattr(sys, "argv", ["tokenize_domains.py"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "pipeline" / "tokenize_domains.py"),
                       run_name="__main__")
    return e.value.code, capsys.readouterr().err


def test_a_files_glob_that_matches_nothing_exits_2_naming_the_domain(tmp_path, toy_params, monkeypatch, capsys):
    toy_params["data"]["domains"]["beta"] = {"source": "files", "paths": ["nothere/*.txt"]}
    code, err = tokenize_stage(tmp_path, toy_params, monkeypatch, capsys)
    assert code == 2 and err == (f"error: data.domains.beta: no file matches data.domains.beta.paths "
                                 f"['nothere/*.txt'] (relative paths are read from {tmp_path}); fix the paths or "
                                 f"add the files\n")
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_an_hf_dataset_that_cannot_be_reached_exits_2_with_one_line(tmp_path, toy_params, monkeypatch, capsys):
    """The hub call replaced by the error datasets raises without a network (no real network used)."""
    import datasets

    def offline(path, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    toy_params["data"]["domains"]["beta"] = {"source": "hf", "dataset": "someone/news", "split": "train"}
    code, err = tokenize_stage(tmp_path, toy_params, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: data.domains.beta: the hf dataset 'someone/news' (split 'train') "
                          "cannot be loaded (ConnectionError: Couldn't reach 'someone/news' on the Hub "
                          "(LocalEntryNotFoundError)); check the network, data.domains.beta.dataset"), err
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def test_a_missing_text_field_or_an_unreadable_file_names_the_domain_and_the_fix(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataSourceError, match=re.escape(
            "data.domains.legal: text_field 'text' is not a column of its data; set data.domains.legal.text_field "
            "to one of ['body']")):
        load_documents("legal", {"source": "files", "paths": [str(tmp_path / "a.jsonl")], "format": "json"}, 0)
    with pytest.raises(DataSourceError, match=r"data.domains.legal: its 1 file\(s\) cannot be read as "
                                              r"data.domains.legal.format 'parquet' \(ArrowInvalid: "):
        load_documents("legal", {"source": "files", "paths": [str(tmp_path / "a.jsonl")], "format": "parquet"}, 0)


@pytest.mark.parametrize("name", ["code", "medical", "legal", "dialogue"])
def test_builtin_domains_ship_real_text(name):
    docs, prov = builtin.LOADERS[name](0)
    assert len(docs) > 1000 and prov["version"]
    assert sum(map(len, docs)) > 200_000
    if name == "legal":
        assert not any(d.startswith("key:") or "\nspdx_license_key:" in d[:2000] for d in docs)


def test_math_generators_give_correct_worked_answers():
    """Each problem's answer, read back from the text, is right (sympy parses what the generator printed)."""
    import math as m

    import sympy as sp

    rng = random.Random(0)
    for _ in range(20):
        question, *_, answer = builtin._differentiate(rng).splitlines()
        f, x = re.fullmatch(r"Differentiate (.+) with respect to (\w)\.", question).groups()
        assert sp.simplify(sp.diff(sp.sympify(f), sp.Symbol(x)) - sp.sympify(answer[len("Answer: "):])) == 0
        question, *_, answer = builtin._expand(rng).splitlines()
        assert sp.expand(sp.sympify(question[len("Expand "):-1]) - sp.sympify(answer[len("Answer: "):])) == 0
        question, *_, answer = builtin._factor(rng).splitlines()
        assert sp.expand(sp.sympify(answer[len("Answer: "):]) - sp.sympify(question[len("Factor "):-1])) == 0
        question, *_, answer = builtin._arithmetic(rng).splitlines()
        assert eval(question[len("Calculate "):-1]) == int(answer[len("Answer: "):])  # only digits, + - * ( )
        question, *_, answer = builtin._gcd_lcm(rng).splitlines()
        kind, a, b = re.fullmatch(r"What is the (greatest common divisor|lowest common multiple) of (\d+) and (\d+)\?",
                                  question).groups()
        assert int(answer[len("Answer: "):]) == (m.gcd if kind.startswith("greatest") else m.lcm)(int(a), int(b))


def test_linear_equation_answer_is_correct():
    import sympy as sp

    rng = random.Random(3)
    for _ in range(20):
        text = builtin._linear_1d(rng)
        question = text.splitlines()[0][len("Solve "):].rsplit(" for ", 1)
        var = sp.Symbol(question[1].rstrip("."))
        lhs, rhs = (sp.sympify(s) for s in question[0].split(" = "))
        answer = int(text.rsplit("= ", 1)[1].rstrip("."))
        assert sp.solve(sp.Eq(lhs, rhs), var) == [answer]


def test_tokenize_build_and_integrity(tmp_path, toy_params):
    manifest = build(toy_params, tmp_path)
    data = TokenData(tmp_path)
    for name in toy_params["data"]["order"]:
        for split in ("train", "val"):
            assert data.array(name, split).size == manifest["domains"][name][split]["tokens"] > 0
    # a flipped byte is detected on load
    path = tmp_path / "beta.val.bin"
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="content hash"):
        TokenData(tmp_path).array("beta", "val")


def test_tokenize_is_deterministic(tmp_path, toy_params):
    build(toy_params, tmp_path / "a")
    build(toy_params, tmp_path / "b")
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_eval_budget_is_capped_by_a_small_val_split_and_recorded(tmp_path, toy_params, capsys):
    toy_params["data"]["eval_tokens"] = 10**6
    manifest = build(toy_params, tmp_path)
    for entry in manifest["domains"].values():
        assert entry["eval_tokens"] == entry["val"]["tokens"] - 1
    assert "it is evaluated on" in capsys.readouterr().out


def test_val_split_too_small_to_evaluate_is_refused(tmp_path, toy_params):
    toy_params["data"]["domains"]["beta"]["docs"] = 12  # two val documents, ~300 tokens
    toy_params["data"]["eval_tokens"] = 1000
    with pytest.raises(EmptyDomainError, match="data.domains.beta: its val split has"):
        build(toy_params, tmp_path)


def test_eval_windows_are_fixed():
    tokens = np.arange(10_000, dtype=np.uint16)
    a, b = eval_windows(tokens, 1024, 32), eval_windows(tokens, 1024, 32)
    assert a.shape == (32, 33) and (a == b).all()
    assert (a[:, 1:] - a[:, :-1] == 1).all()  # contiguous windows


def test_files_that_are_not_utf8_are_read_with_replacement_characters(tmp_path, capsys):
    (tmp_path / "a.txt").write_bytes(b"plain line\nlatin-1 caf\xe9 line\n")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "broken \xff\xfe bytes"}\n')
    docs, prov = load_documents("d", {"source": "files", "paths": [str(tmp_path / "a.txt")], "document": "lines"}, 0)
    assert docs == ["plain line", "latin-1 caf\ufffd line"] and prov["documents_with_replacement_char"] == 1
    docs, _ = load_documents("d", {"source": "files", "paths": [str(tmp_path / "b.jsonl")], "format": "json"}, 0)
    assert docs == ["fine", "broken \ufffd\ufffd bytes"]
    assert "contain U+FFFD" in capsys.readouterr().out


def test_a_single_document_domain_is_refused_naming_it(tmp_path, toy_params):
    (tmp_path / "one.txt").write_text("the only document of this domain\n")
    toy_params["data"]["domains"]["beta"] = {"source": "files", "paths": [str(tmp_path / "one.txt")]}
    with pytest.raises(EmptyDomainError, match=r"data.domains.beta: the (train|val) split is empty; .* 1 distinct"):
        build(toy_params, tmp_path / "tokens")
    assert not (tmp_path / "tokens").exists()


def test_documents_longer_than_the_context_are_cut_into_windows(tmp_path, toy_params):
    """Documents are concatenated into one token stream, so a document many contexts long is simply
    sampled in windows; nothing is dropped."""
    long_docs = [" ".join(f"w{i}x{j}" for j in range(400)) for i in range(40)]
    (tmp_path / "long.txt").write_text("\n".join(long_docs))
    toy_params["data"]["domains"]["beta"] = {"source": "files", "paths": [str(tmp_path / "long.txt")],
                                             "document": "lines"}
    manifest = build(toy_params, tmp_path / "tokens")
    block = toy_params["model"]["block_size"]
    beta = manifest["domains"]["beta"]
    assert beta["train"]["tokens"] / beta["train"]["documents"] > 10 * block
    data = TokenData(tmp_path / "tokens")
    data.require(toy_params["data"]["order"], block)
    x, y = sample_batch(data.array("beta", "train"), 4, block, np.random.default_rng(0))
    assert x.shape == y.shape == (4, block)


def test_a_split_shorter_than_one_window_is_refused_before_training(tmp_path, toy_params):
    build(toy_params, tmp_path)
    with pytest.raises(EmptyDomainError, match=r"data.domains.alpha: its train split has \d+ tokens, fewer than"):
        TokenData(tmp_path).require(toy_params["data"]["order"], 10**6)


def test_a_truncated_token_array_or_a_broken_manifest_is_refused(tmp_path, toy_params):
    build(toy_params, tmp_path)
    path = tmp_path / "alpha.train.bin"
    path.write_bytes(path.read_bytes()[:-2])  # one uint16 token lost
    with pytest.raises(IntegrityError, match="alpha.train.bin: missing, or its content hash does not match"):
        TokenData(tmp_path).array("alpha", "train")
    path.unlink()
    with pytest.raises(IntegrityError, match="alpha.train.bin: missing"):
        TokenData(tmp_path).array("alpha", "train")
    (tmp_path / "manifest.json").write_text('{"vocab_size": 3')
    with pytest.raises(IntegrityError, match="manifest.json: cannot be read"):
        TokenData(tmp_path)
