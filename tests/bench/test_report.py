"""The benchmark report: Markdown + self-contained HTML + PNG plots, and graceful missing tracks."""

from html.parser import HTMLParser

import pytest

from onebit.bench.db import ResultsDB, RunRecord
from onebit.bench.report import PLOTS, write_report
from onebit.bench.scores import MissingBaselineError

VOID = {"meta", "img", "br", "hr", "link", "input"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Checker(HTMLParser):
    """Collects images and table text, and checks that every element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.tables, self.text = [], [], 0, []
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table":
            self.tables += 1
        if tag in ("link", "script") or (tag == "img" and not attrs.get("src", "").startswith("data:")):
            self.external.append((tag, attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _write(path, *, full=True):
    """2 methods + fp x 2 tasks x 2 archs x 2 seeds; with ``full``, corruptions, a grid and deployment."""
    hp = {"optimizer": "sgd", "lr": 0.1, "schedule": "step", "epochs": 3}
    with ResultsDB(path) as db:
        n = 0
        for mi, method in enumerate(("fp", "recu", "bireal")):
            for ti, task in enumerate(("digits", "mnist1d")):
                for ai, (arch, family) in enumerate((("mlp", "mlp"), ("vgg_small", "cnn"))):
                    for seed in (0, 1):
                        acc = 95.0 - 4 * mi - 10 * ti - ai + seed
                        m = {
                            "acc": acc,
                            "epoch_time_s": 1.0 + mi,
                            "params_1bit": 1000.0 * (mi > 0),
                            "params_32bit": 1000.0 if mi == 0 else 50.0,
                            "bops": 64000.0 * (mi > 0),
                            "fp_macs": 64000.0 if mi == 0 else 900.0,
                            "deployable": float(method != "bireal"),
                        }
                        m["flops_bibench"] = m["bops"] / 64 + m["fp_macs"]
                        m["params_bibench"] = m["params_1bit"] / 32 + m["params_32bit"]
                        if full and method != "bireal":
                            m.update(latency_ms=2.0 / (1 + 2 * mi), file_bytes=4000.0 / (1 + 9 * mi))
                        if full:
                            for ci, corr in enumerate(("gaussian_noise", "contrast", "fog")):
                                for sev in (1, 2):
                                    m[f"corrupt/{corr}/{sev}"] = acc - (ci + 1) * sev * (1 + 0.3 * mi)
                        n += 1
                        db.write_run(
                            RunRecord(
                                f"r{n}",
                                "tiny",
                                "main",
                                method,
                                arch,
                                family,
                                task,
                                seed,
                                {"hparams": hp},
                                code_version="v0.1-test",
                                machine="unit-test box",
                                started=1.7e9 + n,
                                finished=1.7e9 + n + 1,
                                metrics=m,
                            )
                        )
        if full:
            for mi, method in enumerate(("fp", "recu", "bireal")):
                for lr in (0.1, 0.01, 0.001):
                    n += 1
                    db.write_run(
                        RunRecord(
                            f"s{n}",
                            "tiny",
                            "sensitivity",
                            method,
                            "mlp",
                            "mlp",
                            "digits",
                            0,
                            {"hparams": dict(hp, lr=lr)},
                            metrics={"acc": 90.0 - mi - lr * 40 * (1 + mi)},
                        )
                    )


@pytest.mark.parametrize("full", [True, False])
def test_report_renders(tmp_path, full):
    results = tmp_path / "out"
    _write(results / "results.sqlite", full=full)
    paths = write_report(results)
    expected_plots = set(PLOTS) if full else {"acc_vs_bops", "radar"}
    assert set(paths) == {"markdown", "html"} | expected_plots
    for name in expected_plots:
        png = paths[name]
        assert png.parent == results / "report" / "plots" and png.stat().st_size > 1000
        assert png.read_bytes().startswith(PNG_MAGIC)
    assert not any(p.name.endswith(".tmp") for p in results.rglob("*"))  # atomic writes leave no temporaries

    html_text = paths["html"].read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(html_text)
    checker.close()
    assert checker.stack == []  # every element closed
    assert checker.external == []  # self-contained
    assert len(checker.images) == len(expected_plots)
    assert all(src.startswith("data:image/png;base64,") for src in checker.images)
    assert html_text.count('<img src="data:image/png;base64,') == len(expected_plots)
    text = " ".join(checker.text)
    assert checker.tables >= 4 and "Leaderboard" in text and "recu" in text and "bireal" in text
    for fact in ("tiny", "v0.1-test", "unit-test box"):  # suite, code version, machine
        assert fact in text

    md = paths["markdown"].read_text(encoding="utf-8")
    assert "## Leaderboard" in md
    assert ("| # | method | mean track rank [95% CI] | Learning task | Architecture | Robustness | Training | "
            "Complexity | Inference |") in md
    assert "## Full-precision baselines" in md and "Rank stability" in md and "onebit's own choices" in md
    n_runs = 24 + 9 if full else 24
    assert f"| runs | {n_runs} finished" in md
    for name in expected_plots:
        assert f"(plots/{name}.png)" in md
    if full:
        # bireal is not deployable: its inference score is a dash, and the track section still renders
        assert "Corruption robustness" in md and "gaussian_noise" in md
    else:
        assert md.count("Not measured") == 2  # robustness and inference
        assert "No hyper-parameter grid" in md


def test_report_to_other_dir_and_rewrite_drops_stale_plots(tmp_path):
    results = tmp_path / "res"
    _write(results / "results.sqlite", full=True)
    out = tmp_path / "rep"
    first = write_report(results / "results.sqlite", out)
    assert first["markdown"] == out / "report.md" and (out / "plots" / "latency.png").exists()
    # the same directory later holds results without deployment: the old latency plot must go
    (results / "results.sqlite").unlink()
    _write(results / "results.sqlite", full=False)
    second = write_report(results, out)
    assert "latency" not in second and not (out / "plots" / "latency.png").exists()


def test_report_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="onebit bench"):
        write_report(tmp_path)


def test_report_lists_missing_baselines(tmp_path):
    results = tmp_path / "res"
    _write(results / "results.sqlite", full=False)
    with ResultsDB(results / "results.sqlite") as db:
        fp_run = next(r for r in db.runs() if (r.method, r.task, r.arch, r.seed) == ("fp", "digits", "mlp", 1))
        db.write_run(RunRecord(**{**fp_run.__dict__, "status": "failed", "error": "RuntimeError: boom"}))
    with pytest.raises(MissingBaselineError, match="arch=mlp, task=digits, seed=1"):
        write_report(results, strict=True)
    md = write_report(results)["markdown"].read_text(encoding="utf-8")
    assert "## Missing baselines" in md and md.count("(role=main, arch=mlp, task=digits, seed=1") == 2
    assert "## Leaderboard" in md  # the rest is still scored
