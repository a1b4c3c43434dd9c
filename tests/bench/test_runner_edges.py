"""Hard edges of ``onebit bench`` / ``onebit report`` (issue 18): a killed benchmark leaves no worker
behind, one benchmark per output folder, every suite problem found before training, an unwritable
output folder, a foreign or corrupt results database — each one clear line, nothing left running."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onebit.bench import ResultsDB
from onebit.bench.db import RunRecord
from onebit.bench.runner import run_suite
from onebit.bench.suite import SuiteError
from onebit.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_runner import tiny_suite, write_toml  # noqa: E402

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, uses a subreaper")


def small_suite(name: str = "edge", robustness: bool = False) -> dict:
    """One method, one seed, 1 epoch on digits: fp + bnn."""
    table = tiny_suite(name, sensitivity=False)
    table["tracks"] = ["accuracy", "robustness"] if robustness else ["accuracy"]
    return table


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------------------------------
# kill -9 of the benchmark: its pool workers die with it
# --------------------------------------------------------------------------------------------------
# A harness process that is a child subreaper: the benchmark's orphaned workers are re-parented to it,
# so it sees every one of them and reaps them all, whatever happens (bounded time; leftovers are killed).
HARNESS = textwrap.dedent(r"""
    import ctypes, json, os, signal, subprocess, sys, time

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    cmd, marker, grace = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])

    def children(pid):
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = open(f"/proc/{entry}/stat").read()
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append((int(entry), cmdline))
        return out

    def reap():
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    bench = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers, deadline = [], time.time() + 120
    while time.time() < deadline and bench.poll() is None:
        workers = [pid for pid, line in children(bench.pid) if marker in line]
        if len(workers) >= 2:
            break
        time.sleep(0.1)
    result = {"bench_alive": bench.poll() is None, "workers": workers}
    time.sleep(grace)  # let the workers get going (initializer run, training started)
    os.kill(bench.pid, signal.SIGKILL)
    bench.wait()
    start, left = time.time(), []
    while time.time() - start < 30:
        reap()
        left = [pid for pid, _ in children(os.getpid())]
        if not left:
            break
        time.sleep(0.1)
    result.update(left_after_30s=left, seconds=round(time.time() - start, 2))
    for pid in left:  # never leave anything behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    reap()
    print(json.dumps(result))
""")


def run_harness(tmp_path: Path, cmd: list[str], marker: str, grace: float = 1.0) -> dict:
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    proc = subprocess.run([sys.executable, str(harness), json.dumps(cmd), marker, str(grace)],
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@linux_only
def test_kill_9_of_bench_takes_its_pool_workers_with_it(tmp_path):
    suite = write_toml(tmp_path / "kill.toml", small_suite("kill"))
    cmd = [sys.executable, "-m", "onebit", "bench", str(suite), "--out", str(tmp_path / "out"), "--workers", "2",
           "--quiet", "--no-report"]
    result = run_harness(tmp_path, cmd, marker="spawn_main", grace=2.0)
    assert result["bench_alive"] and len(result["workers"]) >= 2, result  # a real pool was running
    assert result["left_after_30s"] == [], result  # workers (and the resource tracker) went with it


@linux_only
def test_watchdog_ends_workers_without_the_death_signal(tmp_path):
    """The portable fallback (other platforms): a thread that waits for the parent to go."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import functools, multiprocessing as mp, os, time
        from concurrent.futures import ProcessPoolExecutor
        from onebit.bench._lifetime import die_with_parent

        if __name__ == "__main__":
            init = functools.partial(die_with_parent, os.getpid(), death_signal=False)
            with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), initializer=init) as pool:
                list(pool.map(time.sleep, [120, 120]))
    """))
    result = run_harness(tmp_path, [sys.executable, str(script)], marker="spawn_main", grace=3.0)
    assert len(result["workers"]) >= 2, result
    assert result["left_after_30s"] == [], result


# --------------------------------------------------------------------------------------------------
# One benchmark per output folder
# --------------------------------------------------------------------------------------------------
def test_second_bench_on_a_folder_exits_naming_the_running_one(tmp_path, capsys):
    suite = write_toml(tmp_path / "lock.toml", small_suite("lock"))
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "onebit", "bench", str(suite), "--out", str(out), "--workers",
                              "1", "--quiet", "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        lock = out / ".lock"
        while time.time() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read().decode()
        rc = main(["bench", str(suite), "--out", str(out), "--quiet", "--no-report"])
        line = one_error_line(capsys.readouterr().err)
        assert rc != 0 and f"pid {first.pid}" in line and str(out) in line
        with ResultsDB(out / "results.sqlite") as db:
            assert db.count().get("failed", 0) == 0  # the second one wrote nothing
    finally:
        first.kill()
        first.wait()
    from onebit.bench._lifetime import OutputLock

    with OutputLock(out):  # the kernel released the dead holder's lock: no stale lock
        assert (out / ".lock").read_text().strip() == str(os.getpid())


# --------------------------------------------------------------------------------------------------
# The whole suite is checked before any training
# --------------------------------------------------------------------------------------------------
def test_suite_problems_are_all_found_before_any_training(tmp_path, capsys):
    table = small_suite("pre", robustness=True)
    table["robustness"]["corruptions"] = ["gaussian_noise", "fogg"]  # unknown corruption
    table["setting"].append({"task": "digits", "arch": "mlp", "model_options": {"hidden": "wide"}})  # model
    table["setting"].append({"task": "digits", "arch": "mlp", "model_options": {"tau_min": 5.0}})  # method
    table["setting"].append({"task": "mnist1d", "arch": "mlp", "data_options": {"shift": 99}})  # data
    out = tmp_path / "out"
    with pytest.raises(SuiteError) as info:
        run_suite(table, out, workers=1, progress=False)
    message = str(info.value)
    assert "before any training" in message and "\n" not in message
    for needle in ("'fogg'", "hidden='wide'", "tau_min", "shift=99"):
        assert needle in message, (needle, message)
    assert not out.exists()  # nothing trained, not even a folder made
    rc = main(["bench", str(write_toml(tmp_path / "pre.toml", table)), "--out", str(out), "--quiet"])
    assert rc == 2 and "'fogg'" in one_error_line(capsys.readouterr().err) and not out.exists()


def test_missing_bench_extra_is_found_before_any_training(tmp_path, monkeypatch):
    for module in ("cv2", "imagecorruptions", "imagecorruptions.corruptions"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the [bench] extra were not installed
    table = small_suite("extra", robustness=True)
    table["robustness"]["corruptions"] = ["gaussian_noise", "motion_blur", "elastic_transform"]
    with pytest.raises(SuiteError, match=r"onebit\[bench\]") as info:
        run_suite(table, tmp_path / "out", workers=1, progress=False)
    assert "motion_blur" in str(info.value) and "elastic_transform" in str(info.value)
    assert "gaussian_noise" not in str(info.value)  # numpy only: runs without the extra
    assert not (tmp_path / "out").exists()


def test_every_run_failed_does_not_say_run_bench_first(tmp_path, monkeypatch, capsys):
    from onebit.bench import runner

    def broken(recipe, run_dir, device):
        raise RuntimeError("loss is NaN")

    monkeypatch.setattr(runner, "_train", broken)
    result = run_suite(small_suite("allfail"), tmp_path / "out", workers=1, progress=True)
    err = capsys.readouterr().err
    assert result["done"] == 0 and len(result["failed"]) == 2
    assert "onebit bench" not in err and "first" not in err, err
    assert "every run failed" in err and "loss is NaN" in err
    assert main(["report", str(tmp_path / "out")]) != 0  # the report command says the same
    line = one_error_line(capsys.readouterr().err)
    assert "every one of its 2 runs failed" in line and "first" not in line


# --------------------------------------------------------------------------------------------------
# An output folder that cannot be written
# --------------------------------------------------------------------------------------------------
def test_output_folder_under_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    suite = write_toml(tmp_path / "s.toml", small_suite("ro"))
    rc = main(["bench", str(suite), "--out", str(blocker / "out"), "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert rc != 0 and str(blocker / "out") in line and "--out" in line


def bench_into(folder: Path, suite: Path, prefix: list[str] | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = [*(prefix or []), sys.executable, "-m", "onebit", "bench", str(suite), "--out", str(folder), "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@linux_only
def test_full_output_folder_is_one_line(tmp_path):
    """A full disk, as the file-size limit 0 makes it: every write into the folder fails."""
    import resource

    suite = write_toml(tmp_path / "s.toml", small_suite("full"))
    folder = tmp_path / "full"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # (joblib warns that its /dev/shm probe failed too)
    proc = bench_into(folder, suite, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)), env=env)
    line = one_error_line(proc.stderr)
    assert proc.returncode != 0 and "cannot write to the output folder" in line and str(folder) in line


@linux_only
def test_read_only_output_folder_is_one_line(tmp_path):
    """Mode 0555 for a normal user; root ignores mode bits, so as root the folder is bind-mounted
    read-only in a private mount namespace (skipped where that is not allowed)."""
    suite = write_toml(tmp_path / "s.toml", small_suite("ro"))
    read_only = tmp_path / "ro"
    read_only.mkdir()
    prefix = None
    if os.geteuid() == 0:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {read_only} {read_only}"],
                               capture_output=True)
        if probe.returncode != 0:
            pytest.skip("running as root without mount namespaces: no way to make a folder read-only")
        prefix = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{read_only}" "{read_only}" && exec "$@"', "-"]
    else:
        read_only.chmod(0o555)
    try:
        folder = read_only / "out"
        proc = bench_into(folder, suite, prefix)
        line = one_error_line(proc.stderr)
        assert proc.returncode != 0 and "cannot write to the output folder" in line and str(folder) in line
    finally:
        read_only.chmod(0o755)


# --------------------------------------------------------------------------------------------------
# onebit report: a database onebit does not own, a corrupt one
# --------------------------------------------------------------------------------------------------
def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as con:
        return {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_report_and_bench_never_write_into_a_foreign_database(tmp_path, capsys):
    from onebit.bench.db import DatabaseError, records_from

    foreign = tmp_path / "results.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE people (name TEXT)")
        con.execute("INSERT INTO people VALUES ('ada')")
    before = foreign.read_bytes()
    with pytest.raises(DatabaseError, match="not onebit's results"):
        records_from(foreign)
    assert main(["report", str(foreign)]) != 0
    one_error_line(capsys.readouterr().err)
    assert main(["report", str(tmp_path)]) != 0
    one_error_line(capsys.readouterr().err)
    suite = write_toml(tmp_path / "s.toml", small_suite("foreign"))
    assert main(["bench", str(suite), "--out", str(tmp_path), "--quiet", "--no-report"]) != 0
    assert "not onebit's results" in one_error_line(capsys.readouterr().err)
    assert tables(foreign) == {"people"} and foreign.read_bytes() == before


def test_corrupt_results_database_is_one_line(tmp_path, capsys):
    path = tmp_path / "results.sqlite"
    with ResultsDB(path) as db:
        for i in range(200):  # a few pages of rows
            db.write_run(RunRecord(f"r{i}", "s", "main", "fp", "mlp", "mlp", "digits", 0, {"pad": "x" * 200},
                                   metrics={"acc": 50.0}))
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page but the first (the schema) destroyed
    path.write_bytes(bytes(data))
    from onebit.bench.db import DatabaseError, records_from

    with pytest.raises(DatabaseError, match="corrupt"):
        records_from(path)
    assert main(["report", str(tmp_path)]) != 0
    one_error_line(capsys.readouterr().err)
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)  # a truncated header
    assert main(["report", str(tmp_path)]) != 0
    one_error_line(capsys.readouterr().err)
