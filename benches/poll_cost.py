#!/usr/bin/env python3
"""Benchmark (issue 24, item 3): what it costs to notice pushes made without gitsync, for
REPOS (default 50) repositories served over smart HTTP (`git http-backend` behind
tests/support/git_http_server.py, on loopback), each with BRANCHES (default 20) branches and
TAGS (default 100) tags, when nothing was pushed (the usual case):

- today's periodic update: `git fetch` of each clone;
- `pull.poll`: `git fetch --no-tags --no-write-fetch-head --no-auto-maintenance origin
  +refs/heads/main:refs/remotes/origin/main` (the refs its branches track) of each clone, as
  src/daemon/poll.rs runs it: protocol v2 sends `ref-prefix refs/heads/main`, so the server
  lists that ref only. (`git ls-remote origin refs/heads/main` lists every ref: it sends no
  prefix for a pattern; measured the same bytes as a fetch.)

Counted per round: HTTP requests and bytes the server answered (its log), and CPU seconds
of the git processes (getrusage of children). Reported per hour at a 30 s interval (120
rounds), medians of ROUNDS (default 5) interleaved rounds. Goal: at least 10x fewer bytes.

    python3 benches/poll_cost.py
"""
import os, pathlib, resource, shutil, statistics, subprocess, sys, tempfile, time

here = pathlib.Path(__file__).resolve().parent
project = here.parent
repos = int(os.environ.get("REPOS", "50"))
branches = int(os.environ.get("BRANCHES", "20"))
tags = int(os.environ.get("TAGS", "100"))
rounds = int(os.environ.get("ROUNDS", "5"))

work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-poll-cost."))
env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(work), LC_ALL="C",
           GIT_TERMINAL_PROMPT="0")
(work / ".gitconfig").write_text("[user]\n\tname = b\n\temail = b@example.invalid\n")
procs = []


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                          capture_output=True).stdout.decode()


try:
    served = work / "served"
    served.mkdir()
    seed = work / "seed"
    git("init", "-q", "-b", "main", str(seed), cwd=work)
    for i in range(10):
        (seed / "f.txt").write_text(f"{i}\n" * 100)
        git("add", ".", cwd=seed)
        git("commit", "-qm", f"c{i}", cwd=seed)
    for b in range(branches):
        git("branch", f"b{b:03d}", cwd=seed)
    for t in range(tags):
        git("tag", f"v{t:04d}", cwd=seed)
    log = work / "http.log"
    port_file = work / "http.port"
    procs.append(subprocess.Popen([sys.executable, str(project / "tests/support/git_http_server.py"),
                                   str(served), str(port_file)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(log, "w")))
    for _ in range(300):
        if port_file.exists() and port_file.read_text().strip():
            break
        time.sleep(0.05)
    port = int(port_file.read_text())
    clones = []
    for r in range(repos):
        bare = served / f"r{r:02d}.git"
        git("clone", "-q", "--bare", str(seed), str(bare), cwd=work)
        clone = work / f"clone{r:02d}"
        git("clone", "-q", f"http://127.0.0.1:{port}/r{r:02d}.git", str(clone), cwd=work)
        clones.append(clone)

    def served_since(offset):
        text = log.read_text()[offset:]
        requests = sum(1 for l in text.splitlines() if l.startswith("SENT "))
        sent = sum(int(l.split()[-1]) for l in text.splitlines() if l.startswith("SENT "))
        return requests, sent

    def one_round(kind):
        offset = len(log.read_text())
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        for clone in clones:
            if kind == "fetch":
                git("fetch", "-q", "origin", cwd=clone)
            else:
                git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
                    "--no-recurse-submodules", "--", "origin",
                    "+refs/heads/main:refs/remotes/origin/main", cwd=clone)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        time.sleep(0.3)  # the server's last log lines
        requests, sent = served_since(offset)
        return requests, sent, cpu, wall

    results = {"fetch": [], "poll": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(one_round(kind))
    print(f"{repos} repositories ({branches} branches + main, {tags} tags each), nothing new, "
          f"{rounds} interleaved rounds, medians, per hour at a 30 s interval:")
    med = {}
    for kind, rows in results.items():
        med[kind] = [statistics.median(r[i] for r in rows) for i in range(4)]
        requests, sent, cpu, wall = med[kind]
        print(f"  {kind:<10} {requests * 120:8.0f} requests  {sent * 120 / 2**20:8.1f} MiB served  "
              f"{cpu * 120:7.1f} s CPU (git, client side)  one round {wall:.2f} s")
    ratio = med["fetch"][1] / med["poll"][1]
    print(f"  bytes: fetch / poll = {ratio:.1f}x; goal >= 10x: {'met' if ratio >= 10 else 'MISSED'}")
    print(f"  CPU: fetch / poll = {med['fetch'][2] / med['poll'][2]:.1f}x")
finally:
    for p in procs:
        p.kill()
        p.wait()
    shutil.rmtree(work, ignore_errors=True)
