#!/usr/bin/env python3
"""Benchmark (issue 22): the first publish of a ~100 MB repository to an S3 mirror, side by
side, interleaved, medians: `gitsync mirror` (GITSYNC_BIN, and GITSYNC_BIN_BEFORE when set,
such as a build of an older commit) against awslabs' git-remote-s3 (PyPI, one PutObject per
bundle), when GIT_REMOTE_S3 names its `git-remote-s3` program.

Everything goes to one moto server on loopback (.venv, from `make deps`); each run writes to
a fresh prefix of its own, and each gitsync run a home of its own (so it starts without
a cache of the source, as a first publish does). MB sets the repository's size (default 100), ROUNDS the rounds
(default 3).

    python3 benches/s3_publish.py
    GITSYNC_BIN_BEFORE=/tmp/gitsync.old GIT_REMOTE_S3=/tmp/grs3/bin/git-remote-s3 python3 benches/s3_publish.py
"""
import os, pathlib, shutil, statistics, subprocess, sys, tempfile, time
from ports import free_port, wait_port

here = pathlib.Path(__file__).resolve().parent
project = here.parent
sys.path.insert(0, str(here))
from moto_server import MOTO_BIN  # noqa: E402

target = os.environ.get("CARGO_TARGET_DIR", str(project / "target"))
tools = {"gitsync": os.environ.get("GITSYNC_BIN", f"{target}/release/gitsync")}
if os.environ.get("GITSYNC_BIN_BEFORE"):
    tools["gitsync (before)"] = os.environ["GITSYNC_BIN_BEFORE"]
if os.environ.get("GIT_REMOTE_S3"):
    tools["git-remote-s3"] = os.environ["GIT_REMOTE_S3"]
for name, program in tools.items():
    if not os.access(program, os.X_OK):
        sys.exit(f"{name}: {program} missing (cargo build --release, or pip install git-remote-s3)")
size_mb = int(os.environ.get("MB", "100"))
rounds = int(os.environ.get("ROUNDS", "3"))
python = project / ".venv" / "bin" / "python"

work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-s3pub."))
env = dict(os.environ, HOME=str(work / "home"), GIT_CONFIG_NOSYSTEM="1",
           AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
           AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
(work / "home").mkdir()
procs = []


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


try:
    source = work / "src"
    git("init", "-q", "-b", "main", str(source), cwd=work)
    git("config", "user.name", "bench", cwd=source)
    git("config", "user.email", "bench@example.invalid", cwd=source)
    for i in range(10):
        (source / f"blob{i}.bin").write_bytes(os.urandom(size_mb * 1024 * 1024 // 10))
        git("add", ".", cwd=source)
        git("commit", "-qm", f"part {i}", cwd=source)
    git("gc", "-q", cwd=source)

    port = free_port()
    procs.append(subprocess.Popen([str(MOTO_BIN), "-H", "127.0.0.1", "-p", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(port)
    endpoint = f"http://127.0.0.1:{port}"
    env["AWS_ENDPOINT_URL"] = endpoint
    subprocess.run([str(python), "-c",
                    f"import boto3; boto3.client('s3', endpoint_url='{endpoint}').create_bucket(Bucket='bench')"],
                   env=env, check=True)

    def run(name, program, prefix):
        if name == "git-remote-s3":
            # git finds `git-remote-s3` on PATH for s3:// remotes.
            run_env = dict(env, PATH=f"{pathlib.Path(program).parent}:{env['PATH']}")
            cmd = ["git", "push", "-q", f"s3://bench/{prefix}", "main"]
            cwd = source
        else:
            # A home of its own: a first publish starts without a cache of the source.
            home = work / f"home-{prefix}"
            home.mkdir()
            run_env = dict(env, HOME=str(home))
            cmd = [program, "mirror", "--source", str(source), "--target",
                   f"s3://bench/{prefix}", "--endpoint-url", endpoint]
            cwd = work
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=cwd, env=run_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        elapsed = time.monotonic() - start
        if done.returncode != 0:
            sys.exit(f"{name} failed: {done.stderr.decode(errors='replace')[-2000:]}")
        return elapsed

    times = {name: [] for name in tools}
    for r in range(rounds):
        for name, program in tools.items():
            times[name].append(run(name, program, f"r{r}-{name.replace(' ', '-').strip('()')}"))
    print(f"first publish of a {size_mb} MB repository to moto, {rounds} interleaved rounds, medians:")
    base = statistics.median(times["gitsync"])
    for name, ts in times.items():
        m = statistics.median(ts)
        ratio = "" if name == "gitsync" else f"  (gitsync / this: {base / m:.2f}x)"
        print(f"  {name:<18} {m:6.2f} s{ratio}")
finally:
    for p in procs:
        p.kill()
        p.wait()
    shutil.rmtree(work, ignore_errors=True)
