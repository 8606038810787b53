"""The quality bench end to end on a tiny generated collection and the tiny model: every figure the
README table needs is printed, the result file records how it was made, and the README's table is
the one the committed result files produce."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench import quality
from simulation.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

TOPICS = "apple river mountain guitar window doctor garden pencil camera island engine forest".split()
FILLERS = "red blue green small large old young fast slow warm cold bright dark soft hard".split()


def tiny_collection(folder: Path, queries_per_topic: int = 12, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    docs = {f"d{t}-{j}": f"{topic} {' '.join(rng.sample(FILLERS, 3))}" for t, topic in enumerate(TOPICS) for j in range(3)}
    with (folder / "corpus.jsonl").open("w") as out:
        for doc_id, text in docs.items():
            out.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out, (folder / "qrels.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for t, topic in enumerate(TOPICS):
            for j in range(queries_per_topic):
                query_id = f"q{t}-{j}"
                out.write(json.dumps({"_id": query_id, "text": f"{topic} {' '.join(rng.sample(FILLERS, 2))}"}) + "\n")
                for k in range(3):
                    qrels.write(f"{query_id}\td{t}-{k}\t1\n")
    return folder


def test_the_bench_runs_on_a_tiny_collection_and_writes_its_result_file(tmp_path, capsys):
    dataset = tiny_collection(tmp_path / "tinyset")
    model = build_tiny_model(tmp_path / "model")
    results = tmp_path / "quality-tinyset.json"
    code = quality.main(["--dataset", str(dataset), "--model", str(model), "--seeds", "1", "--max-seq-length", "0",
                         "--min-test-queries", "5", "--sessions-per-query", "2", "--lr", "1e-3",
                         "--mined-negatives", "1", "--wise-ft", "0.5", "--results", str(results), "--no-cache"])
    assert code == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    for name in ("base_ndcg10", "tuned_ndcg10", "candidate_ndcg10", "st_mnrl_ndcg10", "bm25_ndcg10", "oracle_ndcg10",
                 "lift_share_mean", "tuned_ndcg10_mean", "tuned_ndcg10_spread", "trainer_lift"):
        assert name in printed, name
    assert printed["regressions_announced"] in ("0", "1") and printed["seeds"] == "1"

    record = json.loads(results.read_text())
    assert record["command"].startswith("python -m bench.quality --dataset ")
    assert record["git_commit"] and record["machine"]["cpus"] >= 1
    assert len(record["runs"]) == 1 and record["summary"]["seeds"] == 1
    # An announced model is never worse than the base on the bench's own test queries, or it is counted.
    run = record["runs"][0]
    assert run["regression_announced"] == int(bool(run["announced"]) and run["tuned_lift_ndcg10"] < 0)
    # The trainer's best model is measured whether the gate announced it or not (it is kept in MLflow).
    if not run["announced"]:
        assert run["tuned_ndcg10"] == run["base_ndcg10"]
    assert run["candidate_ndcg10"] != run["base_ndcg10"]
    table = quality.quality_table([results])
    assert table.splitlines()[2].startswith("| tinyset (")


def test_the_readme_quality_table_is_the_one_the_committed_results_produce():
    readme = quality.README.read_text()
    table = quality.quality_table(sorted(quality.RESULTS_DIR.glob("quality-*.json")))
    assert f"{quality.TABLE_BEGIN}\n{table}\n{quality.TABLE_END}" in readme, \
        "README's quality table is stale: run `python -m bench.quality --readme`"


def test_the_bench_first_trains_the_shipped_default_methods_recipe():
    shipped = quality.shipped_grid()
    measured = quality._grid(quality.Options())
    assert measured == shipped  # the bench's defaults are the shipped method's first choices, in the same space
    assert quality.Options.lr == shipped["query_lr"][0]
    assert quality.Options.negative_downsampling == shipped["negative_downsampling"][0]


def test_a_screening_option_becomes_the_first_choice_and_keeps_the_rest_of_the_space():
    grid = quality._grid(quality.Options(lr=5e-5, negative_downsampling=0.1))
    assert grid["query_lr"][0] == 5e-5 and sorted(grid["query_lr"]) == sorted(quality.shipped_grid()["query_lr"])
    assert grid["negative_downsampling"][0] == 0.1


def test_seeds_added_in_a_later_sitting_join_the_result_file_and_replace_a_seed_run_again(tmp_path):
    path = tmp_path / "quality-tinyset.json"
    first = {"seed": 0, "command": "python -m bench.quality --dataset tinyset --seeds 1", "git_commit": "a",
             "base_ndcg10": 0.5, "tuned_ndcg10": 0.5, "announced": 0, "regression_announced": 0}
    quality.write_results(path, "tinyset", [first], quality.summarise_seeds([first]), [], "a")
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "note": "run while a test suite shared the CPU"}))

    kept = quality.earlier_runs(path, "tinyset", replaced={1})
    second = {**first, "seed": 1, "command": "python -m bench.quality --dataset tinyset --seed 1 --add",
              "git_commit": "b", "tuned_ndcg10": 0.7}
    quality.write_results(path, "tinyset", kept + [second], quality.summarise_seeds(kept + [second]), [], "b")

    record = json.loads(path.read_text())
    assert [run["seed"] for run in record["runs"]] == [0, 1] and record["summary"]["seeds"] == 2
    assert record["summary"]["tuned_ndcg10_mean"] == pytest.approx(0.6)
    assert record["command"] == first["command"] + "; " + second["command"]
    assert [run["git_commit"] for run in record["runs"]] == ["a", "b"]
    assert record["runs"][0]["note"] == "run while a test suite shared the CPU" and "note" not in record["runs"][1]
    assert quality.earlier_runs(path, "tinyset", replaced={0, 1}) == []
    with pytest.raises(SystemExit, match="holds dataset 'tinyset'"):
        quality.earlier_runs(path, "scifact", replaced=set())


@pytest.mark.parametrize("argv, says", [
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["--sessions-per-query", "-1"], "--sessions-per-query must be at least 1, got -1"),
    (["--lr", "0"], "--lr must be above 0, got 0.0"),
    (["--negative-downsampling", "1.5"], "--negative-downsampling must be in [0, 1], got 1.5"),
    (["--trainer-test-fraction", "0.6", "--trainer-validation-fraction", "0.5"], "with a sum below 1"),
    (["--wise-ft", "0.5", "2"], "--wise-ft mixes must be in [0, 1], got 2.0"),
])
def test_nonsense_numeric_options_are_usage_errors_before_any_work(argv, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        quality.main(["--dataset", str(tmp_path), *argv])
    assert stopped.value.code == 2 and says in capsys.readouterr().err
