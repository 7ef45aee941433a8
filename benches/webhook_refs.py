#!/usr/bin/env python3
"""Benchmark (issue 22): a webhook mirror of a repository with many refs (BRANCHES, default
500, and TAGS, default 2,000), to a bare target behind `git http-backend` with basic auth
(tests/support/git_http_server.py) on loopback, side by side, interleaved, medians:

1. First fill of an empty target: `gitsync webhooks run NAME` from a home of its own (no
   cache of the source yet, so the cache's creation counts) against one
   `git push --all --tags` from the source (the floor: a push of everything). Goal: at most
   1.2x.
2. One small commit on one branch: a signed GitHub push webhook to the daemon's intake
   until the target has the commit (cache and state from the fill) against the seed's way (`git fetch --prune` into its `clone --mirror` cache, then
   `git push --mirror`). Goal: at most 1.0x.

The source is a local bare repository, named as the `file://` URL a user writes. ROUNDS
sets the rounds (default 5), COMMITS the history's length (default 200).

    cargo build --release && python3 benches/webhook_refs.py
"""
import hashlib, hmac, json, os, pathlib, shutil, statistics, subprocess, sys, tempfile, time
import urllib.request
from ports import free_port, wait_port

here = pathlib.Path(__file__).resolve().parent
project = here.parent
target_dir = os.environ.get("CARGO_TARGET_DIR", str(project / "target"))
binary = os.environ.get("GITSYNC_BIN", f"{target_dir}/release/gitsync")
if not os.access(binary, os.X_OK):
    sys.exit(f"{binary} missing: run `cargo build --release` first")
branches = int(os.environ.get("BRANCHES", "500"))
tags = int(os.environ.get("TAGS", "2000"))
commits = int(os.environ.get("COMMITS", "200"))
rounds = int(os.environ.get("ROUNDS", "5"))

work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-webhook-refs."))
env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", TARGET_TOKEN="mirror:pw", HOOK_SECRET="x",
           GITSYNC_LOG="warn", HOME=str(work / "home"))
(work / "home").mkdir()
(work / "home/.gitconfig").write_text(
    "[user]\n\tname = bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n")
procs = []


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                          capture_output=True).stdout.decode()


def timed(cmd, cwd, run_env):
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=run_env, capture_output=True)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


try:
    # The source: a history, BRANCHES branches and TAGS tags spread over it.
    wt = work / "wt"
    git("init", "-q", str(wt), cwd=work)
    script = ["reset refs/heads/main"]
    for i in range(commits):
        data = f"file {i}\n" * 50
        script += [f"commit refs/heads/main", f"mark :{i + 1}",
                   f"committer bench <bench@example.invalid> {1700000000 + i} +0000",
                   "data 7", f"c{i:05d}"[:7], f"M 644 inline f{i % 40}.txt",
                   f"data {len(data)}", data.rstrip("\n")]
    for b in range(branches):
        script += [f"reset refs/heads/b{b:04d}", f"from :{1 + (b * 7) % commits}"]
    for t in range(tags):
        script += [f"reset refs/tags/v{t:05d}", f"from :{1 + (t * 13) % commits}"]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=wt, env=env, check=True,
                   input=("\n".join(script) + "\n").encode())
    source = work / "source.git"
    git("clone", "-q", "--bare", str(wt), str(source), cwd=work)
    git("fetch", "-q", str(wt), "refs/tags/*:refs/tags/*", cwd=source)
    git("gc", "-q", cwd=source)
    refs = len(git("for-each-ref", cwd=source).splitlines())

    served = work / "served"
    served.mkdir()
    port_file = work / "http.port"
    procs.append(subprocess.Popen(
        [sys.executable, str(project / "tests/support/git_http_server.py"), str(served),
         str(port_file), "--auth", "mirror:pw"], env=env, stdout=subprocess.DEVNULL,
        stderr=open(work / "http.log", "w")))
    for _ in range(300):
        if port_file.exists() and port_file.read_text().strip():
            break
        time.sleep(0.05)
    port = int(port_file.read_text())
    cred = f"http://mirror:pw@127.0.0.1:{port}"

    def target(name):
        t = served / f"{name}.git"
        git("init", "-q", "--bare", str(t), cwd=work)
        return t

    def gitsync_home(name, listen=1):
        home = work / f"home-{name}"
        (home / ".gitsync").mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "home/.gitconfig", home / ".gitconfig")
        (home / ".gitsync/config.yml").write_text(
            f"root: {work}\nrepositories: []\nwebhooks:\n  listen: 127.0.0.1:{listen}\n  mirrors:\n"
            f"    - name: m\n      provider: github\n      secret_env: HOOK_SECRET\n"
            f"      source: file://{source}\n      target: http://127.0.0.1:{port}/{name}.git\n"
            f"      target_token_env: TARGET_TOKEN\n      interval: 1h\n")
        return dict(env, HOME=str(home))

    fill = {"gitsync": [], "git push --all --tags": []}
    one = {"gitsync (signed POST -> target updated)": [], "seed (fetch --prune + push --mirror)": []}
    for r in range(rounds):
        # 1. First fill.
        target(f"g{r}")
        genv = gitsync_home(f"g{r}")
        fill["gitsync"].append(timed([binary, "webhooks", "run", "m"], work, genv))
        target(f"p{r}")
        fill["git push --all --tags"].append(
            timed(["git", "push", "-q", f"{cred}/p{r}.git", "refs/heads/*:refs/heads/*",
                   "refs/tags/*:refs/tags/*"], source, env))
        for t in (f"g{r}", f"p{r}"):
            got = len(git("for-each-ref", cwd=served / f"{t}.git").splitlines())
            if got != refs:
                sys.exit(f"target {t} has {got} refs, the source {refs}")

    # 2. One small commit at a time: the daemon of the first round's home (its target
    # filled), a signed webhook each; the seed's cache and target made first (not timed).
    hook_port = free_port()
    genv = gitsync_home("g0", listen=hook_port)
    procs.append(subprocess.Popen([binary, "run"], env=genv, stdout=subprocess.DEVNULL,
                                  stderr=open(work / "daemon.log", "w")))
    wait_port(hook_port)
    seed_cache = work / "seed.git"
    git("clone", "-q", "--mirror", str(source), str(seed_cache), cwd=work)
    target("s")
    git("push", "-q", "--mirror", f"{cred}/s.git", cwd=seed_cache)
    git("reset", "-q", "--hard", "main", cwd=wt)
    time.sleep(1)  # the daemon's start-up run
    for r in range(rounds):
        (wt / "small.txt").write_text(f"small change {r}\n")
        git("add", ".", cwd=wt)
        git("commit", "-qm", f"small {r}", cwd=wt)
        git("push", "-q", str(source), "main:main", cwd=wt)
        want = git("rev-parse", "main", cwd=source).strip()
        body = json.dumps({"ref": "refs/heads/main", "after": want}).encode()
        sig = hmac.new(b"x", body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(f"http://127.0.0.1:{hook_port}/hooks/m", data=body, headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"round-{r}", "X-Hub-Signature-256": f"sha256={sig}"})
        start = time.monotonic()
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status != 202:
                sys.exit(f"the webhook got {answer.status}")
        g0 = served / "g0.git"
        while git("rev-parse", "main", cwd=g0).strip() != want:
            if time.monotonic() - start > 60:
                sys.exit("the small commit did not reach gitsync's target in 60 s")
            time.sleep(0.002)
        one["gitsync (signed POST -> target updated)"].append(time.monotonic() - start)
        one["seed (fetch --prune + push --mirror)"].append(
            timed(["git", "fetch", "-q", "--prune", "origin"], seed_cache, env)
            + timed(["git", "push", "-q", "--mirror", f"{cred}/s.git"], seed_cache, env))
        if git("rev-parse", "main", cwd=served / "s.git").strip() != want:
            sys.exit("the seed's target did not get the small commit")
        time.sleep(0.2)

    def show(title, table, goal):
        names = list(table)
        med = {n: statistics.median(table[n]) for n in names}
        ratio = med[names[0]] / med[names[1]]
        print(title)
        for n in names:
            print(f"  {n:<40} {med[n] * 1000:8.0f} ms  (runs: "
                  + ", ".join(f"{t * 1000:.0f}" for t in table[n]) + ")")
        print(f"  ratio {ratio:.2f}x; goal <= {goal}x: {'met' if ratio <= goal else 'MISSED'}")

    print(f"webhook mirror of {refs} refs ({branches} branches + main, {tags} tags, {commits} "
          f"commits), {rounds} interleaved rounds, medians:")
    show("first fill of an empty target:", fill, 1.2)
    show("one small commit:", one, 1.0)
finally:
    for p in procs:
        p.kill()
        p.wait()
    shutil.rmtree(work, ignore_errors=True)
