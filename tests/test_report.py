"""`ppvi report`: rows read from the RUN_DIRs, missing parts shown, PNG and self-contained HTML decode."""

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from ppvi_cli.errors import PPVIError
from ppvi_cli.report.attacks import ATTACKER_COLUMNS, attacker_cells
from ppvi_cli.report.plots import fitted_limits, place_labels
from ppvi_cli.report.tables import COLUMNS, load_run, make_report, table_cells


class _Page(HTMLParser):
    """Images, table rows and every attribute that could load something from outside."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.links, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script") or "href" in attrs:
            self.links.append((tag, attrs))
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row.append(data)


def _features(rng, n, pids):
    return rng.normal(size=(n, 8)).astype(np.float32), np.resize(pids, n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """RUN_DIRs: blur with all four documents, mosaic with run.json + privacy.json, a third with eval only."""
    from ppvi_cli.anonymize.methods import build_method
    from ppvi_cli.anonymize.runner import anonymize_dataset
    from ppvi_cli.data.synth import SynthConfig, synthesize
    from ppvi_cli.measure import chaos_report, privacy_report
    from ppvi_cli.metrics.features import FeatureSet
    from ppvi_cli.metrics.protocols import evaluate_settings
    from ppvi_cli.attack.run import AttackConfig, run_attack

    root = tmp_path_factory.mktemp("report")
    raw = root / "synthvi"
    synthesize(raw, SynthConfig(ids=4, images_per_camera=1, height=64, width=32, seed=0))
    for name, params in (("blur", {}), ("mosaic", {"block": 8})):
        anonymize_dataset(build_method(name, **params), raw, root / name, fmt="sysu", seed=0)
    rng = np.random.default_rng(0)
    (q, qp), (g, gp) = _features(rng, 6, [1, 2, 3]), _features(rng, 12, [1, 2, 3])
    feats = FeatureSet("mem", {"raw": q, "anon": q + 0.3}, {"raw": g, "anon": g + 0.3}, qp, np.zeros(6, int),
                       gp, np.ones(12, int))
    evaluation = evaluate_settings(feats, "market", ["raw2raw", "raw2anon", "anon2raw", "anon2anon"], backend="torch")

    blur_dir, mosaic_dir, eval_dir = root / "runs" / "blur", root / "runs" / "mosaic", root / "runs" / "pf"
    for d in (blur_dir, mosaic_dir, eval_dir):
        d.mkdir(parents=True)
    (blur_dir / "eval.json").write_text(json.dumps(evaluation))
    (blur_dir / "privacy.json").write_text(json.dumps(privacy_report(raw, root / "blur", "sysu")))
    (blur_dir / "chaos.json").write_text(json.dumps(chaos_report(root / "blur", "sysu")))
    run_attack(AttackConfig(raw=raw, anon=root / "blur", out=blur_dir, attackers=("l1", "gan"), epochs=1, ngf=4,
                            size=(64, 32), batch_size=4, device="cpu"))
    (mosaic_dir / "run.json").write_text(json.dumps({"anon": str(root / "mosaic"), "raw": str(raw)}))
    (mosaic_dir / "privacy.json").write_text(json.dumps(privacy_report(raw, root / "mosaic", "sysu")))
    (eval_dir / "run.json").write_text(json.dumps({"method": "pixelfade", "dataset": "market"}))
    (eval_dir / "eval.json").write_text(json.dumps(evaluation))
    return root, [blur_dir, mosaic_dir, eval_dir]


def test_rows_hold_the_numbers_of_the_run_documents(runs):
    root, dirs = runs
    blur, mosaic, pf = (load_run(d) for d in dirs)
    assert (blur["method"], blur["dataset"], blur["params"]) == ("blur", "synthvi", {"radius": 12.0})
    assert (mosaic["method"], mosaic["dataset"], mosaic["params"]) == ("mosaic", "synthvi", {"block": 8})
    assert (pf["method"], pf["dataset"]) == ("pixelfade", "market")
    evaluation = json.loads((dirs[0] / "eval.json").read_text())["results"]
    assert blur["eval"]["settings"]["anon2anon"]["mAP"] == evaluation["anon2anon"]["mAP"]
    privacy = json.loads((dirs[0] / "privacy.json").read_text())
    assert blur["privacy"]["overall"]["ssim"] == pytest.approx(np.mean([r["ssim"] for r in privacy["images"]]))
    chaos = json.loads((dirs[0] / "chaos.json").read_text())
    assert blur["chaos"]["overall"] == pytest.approx(np.mean([r["ad"] for r in chaos["images"]]))
    attack = json.loads((dirs[0] / "attack.json").read_text())
    worst = max(attack["attackers"][a]["overall"]["ssim"] for a in ("l1", "gan"))
    assert blur["attack"]["overall"]["ssim"] == worst and blur["missing"] == ["run.json"]
    cells = dict(zip(COLUMNS, table_cells(blur)))
    assert cells["worst recovered SSIM"] == f"{worst:.3f}" and cells["worst linkage R1"] == "-"
    lines = attacker_cells(blur)
    assert [line[1] for line in lines] == ["l1", "gan"]
    assert lines[1][2] == f"{attack['attackers']['gan']['overall']['ssim']:.3f}"
    cells = dict(zip(COLUMNS, table_cells(mosaic)))
    assert cells["anon2anon R1/mAP/mINP"] == cells["AD"] == cells["worst recovered SSIM"] == "-"
    assert cells["SSIM"] == f"{mosaic['privacy']['overall']['ssim']:.3f}"
    r1, m_ap, m_inp = table_cells(blur)[COLUMNS.index("anon2anon R1/mAP/mINP")].split("/")
    assert float(m_ap) == pytest.approx(evaluation["anon2anon"]["mAP"], abs=0.05)


def test_report_writes_json_png_and_a_self_contained_html(runs, tmp_path):
    _, dirs = runs
    doc = make_report(dirs, tmp_path / "rep")
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert list(saved["datasets"]) == ["synthvi", "market"]
    assert [r["method"] for r in saved["datasets"]["synthvi"]["rows"]] == ["blur", "mosaic"]
    assert saved["datasets"]["market"]["grid"] is None and saved["run"]["versions"]["ppvi"]
    assert any("mosaic (synthvi)" in n and "pixelfade (market)" in n for n in doc["notes"])
    for png in (doc["plot"], saved["datasets"]["synthvi"]["grid"]):  # relative to the report folder
        with Image.open(tmp_path / "rep" / png) as im:
            im.load()
            assert im.format == "PNG" and im.size[0] > 100
    html_text = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    for text in (html_text, (tmp_path / "rep" / "report.json").read_text()):
        assert str(tmp_path) not in text  # no absolute local path: the report may be mailed
    page = _Page()
    page.feed(html_text)
    assert [r[:2] for r in page.rows if len(r) == len(ATTACKER_COLUMNS)][1:] == [["blur", "l1"], ["blur", "gan"]]
    assert page.links == [] and len(page.images) == 2  # the synthvi grid and the scatter plot
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.load()
    rows = {r[0]: r for r in page.rows if len(r) == len(COLUMNS)}  # the main tables, not the per-modality ones
    assert rows["mosaic"][1:5] == ["-"] * 4 and rows["pixelfade"][-6:] == ["-"] * 6
    assert rows["blur"][COLUMNS.index("worst recovered SSIM")] == \
        f"{doc['datasets']['synthvi']['rows'][0]['attack']['overall']['ssim']:.3f}"


def test_cli_prints_json_and_refuses_bad_run_dirs(runs, tmp_path):
    _, dirs = runs
    ok = run_cli("--json", "report", *map(str, dirs), "--out", str(tmp_path / "rep"))
    assert ok.returncode == 0, ok.stderr
    assert set(json.loads(ok.stdout)["datasets"]) == {"synthvi", "market"}
    (tmp_path / "empty").mkdir()
    empty = run_cli("report", str(tmp_path / "empty"), "--out", str(tmp_path / "rep2"))
    assert empty.returncode == 2 and "holds none of" in empty.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "eval.json").write_text("{not json")
    with pytest.raises(PPVIError, match="eval.json: not readable JSON"):
        load_run(tmp_path / "bad")
    (tmp_path / "bad" / "eval.json").write_text(json.dumps({"protocol": "market"}))
    with pytest.raises(PPVIError, match="no 'results' object"):
        load_run(tmp_path / "bad")


def test_plot_labels_do_not_overlap_and_axes_fit_the_points():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    assert fitted_limits([0.30, 0.34], (0.0, 1.0), 0.05) == pytest.approx((0.289, 0.351))  # 0.05 span, 12% pad
    assert fitted_limits([0.0, 0.5], (0.0, 1.0), 0.05) == pytest.approx((0.0, 0.62))  # shifted inside the bounds
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # six methods crowded into a corner, as mosaic/blur/noise often are
    points = [(0.30 + 0.004 * i, 10.0 + 0.3 * i, name) for i, name in
              enumerate(("mosaic", "blur", "noise", "pixelfade", "securereid", "ppa"))]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xlim(*fitted_limits([p[0] for p in points], (0.0, 1.0), 0.05))
    ax.set_ylim(*fitted_limits([p[1] for p in points], (0.0, 100.0), 5.0))
    boxes = place_labels(ax, points, canvas.get_renderer())
    assert len(boxes) == 6 and len(ax.texts) == 6
    frame = ax.get_window_extent(canvas.get_renderer())
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
