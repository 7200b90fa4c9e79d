"""The progress contract: one Event type, cumulative counts per stage, silent without a callback."""

from conftest import run_cli, tiny_features
from ppvi_cli.anonymize.methods import build_method
from ppvi_cli.anonymize.runner import anonymize_dataset
from ppvi_cli.progress import Event, Tracker, renamed


def _check_stage(events: list[Event], stage: str, total: int) -> None:
    """One stage, `done` never decreasing, ending at done == total."""
    assert events and {e.stage for e in events} == {stage}
    assert all(e.total == total for e in events)
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert events[-1].done == total


def test_anonymize_reports_one_cumulative_stage(image_tree, tmp_path):
    events: list[Event] = []
    anonymize_dataset(build_method("mosaic", block=4), image_tree, tmp_path / "anon", on_progress=events.append)
    _check_stage(events, "anonymize mosaic", 6)
    assert events[0].done == 0  # the size, once the checks passed
    resumed: list[Event] = []  # a rerun skips every image, and says so
    anonymize_dataset(build_method("mosaic", block=4), image_tree, tmp_path / "anon", on_progress=resumed.append)
    _check_stage(resumed, "anonymize mosaic", 6)


def test_a_refused_run_reports_nothing(tmp_path):
    events: list[Event] = []
    try:
        anonymize_dataset(build_method("mosaic", block=4), tmp_path / "missing", tmp_path / "anon",
                          on_progress=events.append)
    except Exception:
        pass
    assert events == []


def test_eval_reports_gallery_rows_over_settings(tmp_path):
    from ppvi_cli.evaluation.store import load_features
    from ppvi_cli.metrics.protocols import evaluate_settings

    feats = load_features(tiny_features(tmp_path / "f.npz"))
    events: list[Event] = []
    evaluate_settings(feats, "market", ["raw2raw"], chunk_size=3, on_progress=events.append)
    _check_stage(events, "eval market", 8)
    assert [e.done for e in events] == [3, 6, 8]


def test_tracker_without_callback_is_a_no_op():
    tracker = Tracker(None, "x", 3)
    tracker.start()
    tracker.advance(2, {"loss": 1.0})
    tracker.to(3)
    assert tracker.done == 3 and tracker.part() is None and renamed(None, "y") is None


def test_tracker_counts_and_folds_a_callee_into_its_stage():
    events: list[Event] = []
    tracker = Tracker(events.append, "outer", 10)
    for _ in range(2):  # a callee per call, each counting from zero
        inner = Tracker(tracker.part(), "inner", 5)
        inner.advance(2)
        inner.to(5, {"loss": 0.5})
    assert [(e.stage, e.done, e.total) for e in events] == [("outer", n, 10) for n in (2, 5, 7, 10)]
    assert events[1].info == {"loss": 0.5}
    relabelled: list[Event] = []
    renamed(relabelled.append, "b")(Event("a", 1, 2, {"k": 1}))
    assert relabelled == [Event("b", 1, 2, {"k": 1})]


def test_cli_bars_on_stderr_only_and_silent_when_quiet(image_tree, tmp_path):
    args = ["anonymize", "--method", "mosaic", "--input", str(image_tree)]
    drawn = run_cli("--json", *args, "--output", str(tmp_path / "a"))
    assert drawn.returncode == 0 and "anonymize mosaic" in drawn.stderr and "6/6" in drawn.stderr
    assert drawn.stdout.lstrip().startswith("{")
    quiet = run_cli("--quiet", *args, "--output", str(tmp_path / "b"))
    assert quiet.returncode == 0 and quiet.stderr == ""
    refused = run_cli("anonymize", "--method", "mosaic", "--input", str(tmp_path / "missing"),
                      "--output", str(tmp_path / "c"))
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "anonymize mosaic" not in refused.stderr
