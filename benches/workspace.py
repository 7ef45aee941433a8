#!/usr/bin/env python3
"""Benchmark for issue 12, on the local hub, in one run:

1. Time from `git clone` under a running daemon's root to the repository's row in
   `gitsync status --json` (RUNS clones, default 10; median and max). The daemon's rescan
   interval is an hour, so only the root's watch can explain a row within seconds.
2. `gitsync bootstrap` of REPOS repositories (default 50) over file://, against a shell
   loop of `git clone` of the same repositories (the baseline; goal: at most 0.5x).
   ROUNDS rounds (default 7), each the loop then bootstrap back to back; the medians of
   the times and the median (and range) of the per-round ratios are reported.

    cargo build --release && python3 benches/workspace.py
"""
import json, os, pathlib, shutil, statistics, subprocess, sys, tempfile, time

here = pathlib.Path(__file__).resolve().parent
project = here.parent
target_dir = os.environ.get("CARGO_TARGET_DIR", str(project / "target"))
binary = os.environ.get("GITSYNC_BIN", f"{target_dir}/release/gitsync")
runs = int(os.environ.get("RUNS", "10"))
# BOOT_ARGS: extra arguments for `gitsync bootstrap`, such as `--jobs 16`.
repos = int(os.environ.get("REPOS", "50"))
rounds = int(os.environ.get("ROUNDS", "7"))
if not os.access(binary, os.X_OK):
    sys.exit(f"{binary} missing: run `cargo build --release` first")

work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-workspace-bench-"))
env_base = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", GITSYNC_LOG="warn")
for key in ("GITSYNC_CONFIG",):
    env_base.pop(key, None)
procs = []


def home(name):
    h = work / "homes" / name
    if not h.exists():
        (h / ".gitsync").mkdir(parents=True)
        (h / ".gitconfig").write_text(
            "[user]\n\tname = bench\n\temail = bench@example.invalid\n"
            "[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n")
    return h


def env_of(h):
    return dict(env_base, HOME=str(h))


def run(*args, cwd=None, h=None):
    return subprocess.run(list(args), cwd=cwd, env=env_of(h or home("default")), check=True,
                          capture_output=True)


def config(h, host, root, extra=""):
    # A configured hub must exist (the daemon refuses a share that is not mounted).
    (work / "hub").mkdir(exist_ok=True)
    (h / ".gitsync" / "config.yml").write_text(
        f"hostname: {host}\nroot: {root}\nlocal:\n  path: {work / 'hub'}\n"
        f"pull:\n  interval: 1h\n  rescan: 1h\n{extra}")


try:
    # Remotes: REPOS small repositories (a few files, three commits each).
    remotes = work / "remotes"
    remotes.mkdir()
    seed = work / "seed"
    run("git", "init", "-q", str(seed))
    for i in range(20):
        (seed / f"f{i}.txt").write_text(f"file {i}\n" * 50)
    run("git", "add", ".", cwd=seed)
    for n in range(3):
        (seed / "log.txt").write_text(f"commit {n}\n")
        run("git", "add", ".", cwd=seed)
        run("git", "commit", "-qm", f"c{n}", cwd=seed)
    for i in range(repos):
        run("git", "clone", "-q", "--bare", str(seed), str(remotes / f"r{i:02}.git"))

    # 1. Clone to row.
    root_a = work / "root-a"
    root_a.mkdir()
    ha = home("a")
    config(ha, "host-a", root_a)
    log = open(work / "daemon-a.log", "w")
    daemon = subprocess.Popen([binary, "run"], env=dict(env_of(ha), GITSYNC_LOG="info"),
                              stdout=subprocess.DEVNULL, stderr=log)
    procs.append(daemon)
    for _ in range(600):
        if "ready" in (work / "daemon-a.log").read_text():
            break
        time.sleep(0.05)
    latencies = []
    for i in range(runs):
        name = f"new{i:02}"
        start = time.monotonic()
        run("git", "clone", "-q", f"file://{remotes / 'r00.git'}", str(root_a / name), h=ha)
        while True:
            out = subprocess.run([binary, "status", "--json"], env=env_of(ha), capture_output=True)
            rows = json.loads(out.stdout or b"[]")
            if any(r["repo"] == name and r["host"] == "host-a" for r in rows):
                break
            if time.monotonic() - start > 30:
                sys.exit(f"{name} never appeared; see {work / 'daemon-a.log'}")
            time.sleep(0.01)
        latencies.append(time.monotonic() - start)
    daemon.terminate()
    daemon.wait()
    procs.remove(daemon)
    print(f"clone -> row in status: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms ({runs} clones)")

    # 2. Bootstrap against a loop of git clone. Host b has REPOS repositories.
    root_b = work / "root-b"
    hb = home("b")
    for i in range(repos):
        run("git", "clone", "-q", f"file://{remotes / f'r{i:02}.git'}", str(root_b / f"r{i:02}"), h=hb)
    config(hb, "host-b", root_b)
    run(binary, "sync", "--quiet", h=hb)
    loop_times, boot_times = [], []
    for r in range(rounds):
        loop_root = work / f"loop-{r}"
        loop_root.mkdir()
        script = "".join(
            f"git clone -q file://{remotes / f'r{i:02}.git'} {loop_root / f'r{i:02}'}\n"
            for i in range(repos))
        start = time.monotonic()
        subprocess.run(["sh", "-e", "-c", script], env=env_of(hb), check=True)
        loop_times.append(time.monotonic() - start)
        hc = home(f"c{r}")
        boot_root = work / f"boot-{r}"
        boot_root.mkdir()
        config(hc, f"host-c{r}", boot_root)
        start = time.monotonic()
        out = run(binary, "bootstrap", "--from", "host-b", *os.environ.get("BOOT_ARGS", "").split(), h=hc)
        boot_times.append(time.monotonic() - start)
        last = out.stdout.decode().strip().splitlines()[-1]
        assert f"{repos} cloned" in last, last
        shutil.rmtree(loop_root)
        shutil.rmtree(boot_root)
    loop, boot = statistics.median(loop_times), statistics.median(boot_times)
    # Each round runs the loop and bootstrap back to back, so the ratio of a round is
    # paired: its median is steadier than the ratio of medians on a noisy disk.
    ratios = sorted(b / l for b, l in zip(boot_times, loop_times))
    print(f"{repos} repositories over file://: git clone loop {loop:.2f} s, "
          f"gitsync bootstrap {boot:.2f} s (hooks installed too; medians of {rounds}); "
          f"ratio per round: median {statistics.median(ratios):.2f}x, "
          f"range {ratios[0]:.2f}-{ratios[-1]:.2f}x (goal <= 0.5x)")
finally:
    for p in procs:
        p.kill()
        p.wait()
    shutil.rmtree(work, ignore_errors=True)
