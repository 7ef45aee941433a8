#!/usr/bin/env python3
"""Benchmark: the push -> pull path, and what the pre-push hook adds to a push.

1. Latency: two daemons (two HOMEs, one local hub, one bare remote, `pull.interval: 1h`
   so that only events explain a pull). 20 times: commit on A, `git push`, and time from
   `git push` returning until B's checked-out branch is at the pushed commit (B's ref file
   is polled every millisecond). Goal: median at most 300 ms, p95 at most 1 s. Printed
   beside it, the baselines' design floors: GitArgus (at least a 10 s SQS delivery delay,
   plus up to 40 s sleep between polls) and kubernetes/git-sync (10 s default period).
2. Hook overhead: `git push` of a new commit to a local bare remote, 20 runs without the
   hook and 20 with it (daemon running), interleaved. Goal: added median at most 20 ms.

    python3 benches/push_pull.py   (GITSYNC_BIN overrides the binary; PUSHES the count)
    BACKEND=aws python3 benches/push_pull.py
        the same latency through moto's server (started on a free loopback port from
        .venv, see `make deps`); goal: median at most 1 s, p95 at most 2 s. The hook
        overhead does not depend on the backend and is measured with the local one only.
"""
import os, pathlib, shutil, statistics, subprocess, sys, tempfile, time
import moto_server

here = pathlib.Path(__file__).resolve().parent
target = os.environ.get("CARGO_TARGET_DIR", str(here.parent / "target"))
binary = os.environ.get("GITSYNC_BIN", f"{target}/release/gitsync")
pushes = int(os.environ.get("PUSHES", "20"))
backend = os.environ.get("BACKEND", "local")
if not os.access(binary, os.X_OK):
    sys.exit(f"{binary} missing: run `cargo build --release` first")
work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-pushpull-"))
hub = work / "hub"
hub.mkdir()  # a configured hub must exist (the daemon refuses a missing share)


def make_home(name):
    home = work / "homes" / name
    (home / ".gitsync").mkdir(parents=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = bench\n\temail = bench@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n")
    return home


def env_for(home):
    return dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
                AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                AWS_EC2_METADATA_DISABLED="true")


def git(*args, cwd, home):
    subprocess.run(["git", *args], cwd=cwd, env=env_for(home), check=True,
                   stdout=subprocess.DEVNULL)


def out(*args, cwd, home):
    return subprocess.run(["git", *args], cwd=cwd, env=env_for(home), check=True,
                          capture_output=True, text=True).stdout.strip()


home_a, home_b = make_home("a"), make_home("b")
bare = work / "remote.git"
bare.mkdir()
git("init", "-q", "--bare", cwd=bare, home=home_a)
clone_a = work / "root-a" / "proj"
clone_b = work / "root-b" / "proj"
plain = work / "plain" / "proj"
for clone in (clone_a, clone_b, plain):
    clone.parent.mkdir(parents=True)
seed = work / "seed"
seed.mkdir()
git("init", "-q", cwd=seed, home=home_a)
(seed / "a.txt").write_text("one\n")
git("add", ".", cwd=seed, home=home_a)
git("commit", "-qm", "first", cwd=seed, home=home_a)
git("push", "-q", str(bare), "main", cwd=seed, home=home_a)
for clone in (clone_a, clone_b, plain):
    git("clone", "-q", str(bare), str(clone), cwd=work, home=home_a)

moto = None
if backend == "aws":
    moto, port = moto_server.start()
for name, home in (("a", home_a), ("b", home_b)):
    if backend == "aws":
        (home / ".gitsync" / "config.yml").write_text(
            f"hostname: bench-{name}\nroot: {work / ('root-' + name)}\nbackend: aws\naws:\n"
            f"  region: us-east-1\n  endpoint_url: http://127.0.0.1:{port}\n"
            f"  dynamodb: {{table: git}}\n  sqs: {{queue: bench-{name}.fifo}}\n"
            '  sns: {topic: {arn: "arn:aws:sns:us-east-1:123456789012:git.fifo"}}\n'
            "pull:\n  interval: 1h\n")
        subprocess.run([binary, "aws", "setup"], env=env_for(home), check=True,
                       stdout=subprocess.DEVNULL)
    else:
        (home / ".gitsync" / "config.yml").write_text(
            f"hostname: bench-{name}\nroot: {work / ('root-' + name)}\nlocal:\n  path: {hub}\n"
            "pull:\n  interval: 1h\n")
daemons = []
for home in (home_a, home_b):
    log = (home / "daemon.log").open("w")
    daemons.append(subprocess.Popen([binary, "run"], env=env_for(home), stderr=log,
                                    stdout=subprocess.DEVNULL))


def wait(what, pred, timeout=30.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return
        time.sleep(0.01)
    for home in (home_a, home_b):
        log = home / "daemon.log"
        if log.exists():
            sys.stderr.write(f"--- {log}\n{log.read_text()[-3000:]}\n")
    sys.exit(f"timed out waiting for {what}")


try:
    for home in (home_a, home_b):
        wait("daemon ready", lambda h=home: "ready" in (h / "daemon.log").read_text())
    wait("hook installed", lambda: (clone_a / ".git/hooks/pre-push").exists())

    b_ref = clone_b / ".git" / "refs" / "heads" / "main"

    def latencies_of(tag):
        """`pushes` pushes on A; milliseconds from `git push` returning to B at the commit."""
        found = []
        for i in range(pushes):
            (clone_a / "a.txt").write_text(f"{tag} {i}\n")
            git("commit", "-qam", f"{tag} {i}", cwd=clone_a, home=home_a)
            sha = out("rev-parse", "HEAD", cwd=clone_a, home=home_a)
            git("push", "-q", "origin", "main", cwd=clone_a, home=home_a)
            pushed = time.monotonic()
            while True:
                try:
                    if b_ref.read_text().strip() == sha:
                        break
                except OSError:
                    pass
                if time.monotonic() - pushed > 30:
                    sys.exit(f"{tag} push {i}: B never reached {sha}")
                time.sleep(0.001)
            found.append((time.monotonic() - pushed) * 1000)
            time.sleep(0.2)
        return found

    latencies = latencies_of("change")

    # The hookless path alone: the hook removed, the push seen by the watcher in the
    # remote-tracking ref's reflog ("update by push").
    hook = clone_a / ".git" / "hooks" / "pre-push"
    hook_text = hook.read_text()
    hookless = []
    if backend != "aws":
        hook.unlink()
        hookless = latencies_of("hookless")
        hook.write_text(hook_text)
        hook.chmod(0o755)

    # Hook overhead: the same push with and without the hook, interleaved.
    with_hook, without_hook, wedged = [], [], []
    if backend != "aws":

        def timed_push(repo, i, tag):
            (repo / f"h-{tag}.txt").write_text(f"{tag} {i}\n")
            git("add", f"h-{tag}.txt", cwd=repo, home=home_a)
            git("commit", "-qm", f"{tag} {i}", cwd=repo, home=home_a)
            git("pull", "-q", "--rebase", "origin", "main", cwd=repo, home=home_a)
            start = time.monotonic()
            git("push", "-q", "origin", "main", cwd=repo, home=home_a)
            return (time.monotonic() - start) * 1000

        for i in range(pushes):
            without_hook.append(timed_push(plain, i, "plain"))
            with_hook.append(timed_push(clone_a, i, "hooked"))
        assert hook.read_text() == hook_text
finally:
    for d in daemons:
        d.terminate()
    for d in daemons:
        d.wait(timeout=30)
    if moto is not None:
        moto.terminate()
        moto.wait(timeout=30)
        moto = None

# The hook against a wedged listener: something holds the daemon's socket, never accepts,
# and its backlog is full (a blocking connect would wait forever).
if backend != "aws":
    import socket as sk
    path = str(home_a / ".gitsync" / "gitsync.sock")
    try:
        os.unlink(path)
    except OSError:
        pass
    listener = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    filler = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    filler.connect(path)
    plain_wedged = []
    for i in range(pushes):
        plain_wedged.append(timed_push(plain, 1000 + i, "plain"))
        wedged.append(timed_push(clone_a, 1000 + i, "wedged"))
    filler.close()
    listener.close()


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


med, tail = statistics.median(latencies), p95(latencies)
print(f"push -> pull latency over {pushes} pushes ({backend} backend):")
print(f"  gitsync                  median {med:7.1f} ms   p95 {tail:7.1f} ms   max {max(latencies):7.1f} ms")
print("  GitArgus design floor    >= 10000 ms (SQS delivery delay) + up to 40000 ms sleep")
print("  kubernetes/git-sync      10000 ms default period (5000 ms mean wait)")
print(f"  ratio vs GitArgus floor  {med / 10000:.3f}x   vs git-sync period {med / 10000:.3f}x")
goal_med, goal_p95 = (1000, 2000) if backend == "aws" else (300, 1000)
print(f"  goal: median <= {goal_med} ms: {'met' if med <= goal_med else 'MISSED'};"
      f" p95 <= {goal_p95} ms: {'met' if tail <= goal_p95 else 'MISSED'}")
if hookless:
    hm = statistics.median(hookless)
    print(f"push -> pull without the hook (the watcher reads the reflog), {pushes} pushes:")
    print(f"  hookless                 median {hm:7.1f} ms   p95 {p95(hookless):7.1f} ms")
    print(f"  with the hook            median {med:7.1f} ms")
    print(f"  ratio hookless / hook    {hm / med:.2f}x")
if wedged:
    wm = statistics.median(wedged) - statistics.median(plain_wedged)
    print(f"hook against a wedged listener (backlog full, never accepts), {pushes} pushes:")
    print(f"  git push with hook       median {statistics.median(wedged):7.1f} ms   max {max(wedged):7.1f} ms")
    print(f"  added                    {wm:7.1f} ms; goal: no push waits 1 s: "
          f"{'met' if max(wedged) < 1000 else 'MISSED'}")
if with_hook:
    added = statistics.median(with_hook) - statistics.median(without_hook)
    print(f"hook overhead over {pushes} pushes each:")
    print(f"  git push without hook    median {statistics.median(without_hook):7.1f} ms")
    print(f"  git push with hook       median {statistics.median(with_hook):7.1f} ms")
    print(f"  added                    {added:7.1f} ms"
          f" ({statistics.median(with_hook) / statistics.median(without_hook):.2f}x);"
          f" goal <= 20 ms: {'met' if added <= 20 else 'MISSED'}")
shutil.rmtree(work, ignore_errors=True)
