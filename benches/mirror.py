#!/usr/bin/env python3
"""Benchmark: `gitsync mirror` against mirror-git-to-s3 0.0.24 (PyPI), side by
side, in one run.

Both read the same generated source (about 5,000 objects, OBJECTS overrides) served by
`git http-backend` on loopback (tests/support/git_http_server.py), and both write to the
same moto server (its request log counts the S3 requests of each). For each tool:

  1. the first mirror (time, S3 requests);
  2. a rerun with nothing new (time, requests);
  3. a rerun after one small commit (time, requests);
  4. a fresh stock `git clone` over dumb HTTP from its mirror (time, and `git fsck`).

Goals (issue 13): first mirror >= 30x faster, >= 100x fewer requests, nothing-new rerun
<= 2 requests, clone from gitsync's mirror >= 20x faster. Then gitsync alone mirrors a
repository of at least 500 MB (RSS_MB, 0 skips it) and reports its peak RSS (VmHWM of the
gitsync process, not its git children). Goal: <= 64 MB.

The seed's POST to git-upload-pack lacks the Content-Type header that `git http-backend`
requires ("Expected POST with Content-Type 'application/x-git-upload-pack-request'"), so the
seed gets an httpx client whose request hook adds that header; nothing else of it changes.
The seed is installed into .venv-seed beside the project on the first run.

    python3 benches/mirror.py      (GITSYNC_BIN overrides the binary)
"""
import os, pathlib, re, shutil, socket, statistics, subprocess, sys, tempfile, time
from ports import free_port, wait_port

here = pathlib.Path(__file__).resolve().parent
project = here.parent
sys.path.insert(0, str(here))
from moto_server import MOTO_BIN  # noqa: E402

target = os.environ.get("CARGO_TARGET_DIR", str(project / "target"))
binary = os.environ.get("GITSYNC_BIN", f"{target}/release/gitsync")
objects_wanted = int(os.environ.get("OBJECTS", "5000"))
rss_mb = int(os.environ.get("RSS_MB", "512"))
if not os.access(binary, os.X_OK):
    sys.exit(f"{binary} missing: run `cargo build --release` first")
if not os.access(MOTO_BIN, os.X_OK):
    sys.exit(f"{MOTO_BIN} missing: run `make deps` first")

seed_venv = project / ".venv-seed"
seed_python = seed_venv / "bin" / "python"
if subprocess.run([str(seed_python), "-c", "import mirror_git_to_s3, boto3"],
                  capture_output=True).returncode != 0:
    subprocess.run([sys.executable, "-m", "venv", str(seed_venv)], check=True)
    subprocess.run([str(seed_venv / "bin" / "pip"), "install", "-q", "mirror-git-to-s3==0.0.24",
                    "boto3"], check=True)

work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-mirror-bench-"))
home = work / "home"
home.mkdir()
(home / ".gitconfig").write_text(
    "[user]\n\tname = bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n")
env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
           AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
           AWS_EC2_METADATA_DISABLED="true")
procs = []


def git(*args, cwd, **kw):
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, **kw)


def generate(repo, objects):
    """A history of about `objects` objects with git fast-import: each commit adds two
    files in one of 20 folders (commit + root tree + folder tree + 2 blobs)."""
    commits = max(1, objects // 5)
    lines = []
    for i in range(commits):
        lines.append(f"commit refs/heads/main\nmark :{i + 1}\n"
                     f"committer bench <b@example.invalid> {1700000000 + i} +0000\n"
                     f"data <<EOF\ncommit {i}\nEOF\n")
        if i:
            lines.append(f"from :{i}\n")
        for j in range(2):
            body = f"file {i}-{j}\n" + "x" * (i % 300) + "\n"
            lines.append(f"M 100644 inline d{i % 20}/f{i}-{j}.txt\ndata {len(body)}\n{body}\n")
    lines.append("tag v1\nfrom refs/heads/main\ntagger bench <b@example.invalid> 1700000000 +0000\n"
                 "data <<EOF\nrelease\nEOF\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, env=env, check=True,
                   input="".join(lines).encode())
    git("branch", "dev", "main~10", cwd=repo)
    git("update-server-info", cwd=repo)
    count = git("count-objects", "-v", cwd=repo).stdout.decode()
    return sum(int(v) for k, v in re.findall(r"^(count|in-pack): (\d+)$", count, re.M))


served = work / "served"
served.mkdir()
source = served / "src.git"
git("init", "-q", "--bare", str(source), cwd=work)
total_objects = generate(source, objects_wanted)

# The source over smart HTTP, and moto with its request log.
http_port_file = work / "http.port"
http = subprocess.Popen([sys.executable, str(project / "tests/support/git_http_server.py"),
                         str(served), str(http_port_file)], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
procs.append(http)
for _ in range(300):
    if http_port_file.exists():
        break
    time.sleep(0.05)
source_url = f"http://127.0.0.1:{http_port_file.read_text().strip()}/src.git"
moto_port = free_port()
moto_log = work / "moto.log"
moto = subprocess.Popen([str(MOTO_BIN), "-H", "127.0.0.1", "-p", str(moto_port)], env=env,
                        stdout=subprocess.DEVNULL, stderr=open(moto_log, "w"))
procs.append(moto)
wait_port(moto_port)
endpoint = f"http://127.0.0.1:{moto_port}"
subprocess.run([str(seed_python), "-c", f"""
import boto3, json
s3 = boto3.client('s3', endpoint_url='{endpoint}')
s3.create_bucket(Bucket='bench')
s3.put_bucket_policy(Bucket='bench', Policy=json.dumps({{'Version': '2012-10-17', 'Statement': [
    {{'Effect': 'Allow', 'Principal': '*', 'Action': ['s3:GetObject', 's3:ListBucket'],
      'Resource': ['arn:aws:s3:::bench', 'arn:aws:s3:::bench/*']}}]}}))
"""], env=env, check=True)


def requests_so_far():
    return sum(1 for line in moto_log.read_text(errors="replace").splitlines()
               if re.search(r'"\S*(GET|PUT|POST|HEAD|DELETE) ', line))


# A run that takes longer than this is stopped and reported.
LIMIT = int(os.environ.get("LIMIT", "900"))

SEED_RUN = """
import sys, boto3, httpx
from mirror_git_to_s3 import mirror_repos
def add_content_type(request):
    # git http-backend needs it; the seed does not send it.
    if request.url.path.endswith('/git-upload-pack'):
        request.headers['Content-Type'] = 'application/x-git-upload-pack-request'
mirror_repos([(sys.argv[1], sys.argv[2])],
    get_http_client=lambda: httpx.Client(event_hooks={'request': [add_content_type]}, timeout=600),
    get_s3_client=lambda: boto3.client('s3', endpoint_url=sys.argv[3]))
"""


def run_tool(tool, prefix):
    """One mirror run of `tool`; returns (seconds, S3 requests, peak RSS MB)."""
    if tool == "seed":
        cmd = [str(seed_python), "-c", SEED_RUN, source_url, f"s3://bench/{prefix}", endpoint]
    else:
        cmd = [binary, "mirror", "--source", source_url, "--target", f"s3://bench/{prefix}",
               "--endpoint-url", endpoint]
    before = requests_so_far()
    start = time.monotonic()
    # Output to a file, never a pipe nobody reads: the seed's progress bars would fill it
    # and block the seed.
    log = open(work / f"{tool}-{prefix}.log", "w+b")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    peak = 0
    status = pathlib.Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        if time.monotonic() - start > LIMIT:
            proc.kill()
            proc.wait()
            sys.exit(f"{tool} did not finish within {LIMIT} s (stopped)")
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        log.seek(0)
        sys.exit(f"{tool} failed:\n{log.read().decode(errors='replace')[-3000:]}")
    time.sleep(0.3)  # the request log is written after each response
    return elapsed, requests_so_far() - before, peak / 1024


def clone_time(prefix):
    dest = work / f"clone-{prefix}"
    start = time.monotonic()
    git("clone", "-q", f"{endpoint}/bench/{prefix}", str(dest), cwd=work)
    elapsed = time.monotonic() - start
    git("fsck", "--full", cwd=dest)
    return elapsed


def small_commit():
    scratch = work / "scratch"
    if not scratch.exists():
        git("clone", "-q", str(source), str(scratch), cwd=work)
    else:
        git("pull", "-q", cwd=scratch)
    (scratch / "small.txt").write_text(f"small {time.time()}\n")
    git("add", ".", cwd=scratch)
    git("commit", "-qm", "small", cwd=scratch)
    git("push", "-q", "origin", "main", cwd=scratch)


results = {}
try:
    for tool in ("gitsync", "seed"):
        results[tool] = {"first": run_tool(tool, tool)}
    for tool in ("gitsync", "seed"):
        results[tool]["again"] = run_tool(tool, tool)
    small_commit()
    for tool in ("gitsync", "seed"):
        results[tool]["commit"] = run_tool(tool, tool)
    for tool in ("gitsync", "seed"):
        results[tool]["clone"] = clone_time(tool)

    print(f"mirror of {total_objects} objects from git http-backend into moto's S3 (loopback)")
    print(f"{'':34}{'gitsync':>12}{'seed 0.0.24':>14}{'ratio':>10}")
    for key, label in (("first", "first mirror"), ("again", "rerun, nothing new"),
                       ("commit", "rerun after one small commit")):
        g, s = results["gitsync"][key], results["seed"][key]
        print(f"{label + ' (s)':34}{g[0]:12.2f}{s[0]:14.2f}{s[0] / g[0]:9.1f}x")
        print(f"{'  S3 requests':34}{g[1]:12d}{s[1]:14d}"
              f"{(s[1] / g[1]) if g[1] else float('inf'):9.1f}x")
    g, s = results["gitsync"]["clone"], results["seed"]["clone"]
    print(f"{'fresh dumb git clone (s)':34}{g:12.2f}{s:14.2f}{s / g:9.1f}x")
    first_ratio = results["seed"]["first"][0] / results["gitsync"]["first"][0]
    req_ratio = results["seed"]["first"][1] / max(1, results["gitsync"]["first"][1])
    print(f"goals: first mirror >= 30x faster: {'met' if first_ratio >= 30 else 'MISSED'}; "
          f">= 100x fewer requests: {'met' if req_ratio >= 100 else 'MISSED'}; "
          f"nothing new <= 2 requests: {'met' if results['gitsync']['again'][1] <= 2 else 'MISSED'}; "
          f"clone >= 20x faster: {'met' if s / g >= 20 else 'MISSED'}")

    if rss_mb:
        big = served / "big.git"
        git("init", "-q", "--bare", str(big), cwd=work)
        big_work = work / "big-work"
        git("clone", "-q", str(big), str(big_work), cwd=work)
        commits = 32
        for i in range(commits):
            (big_work / f"blob{i:03}.bin").write_bytes(os.urandom(rss_mb * 1024 * 1024 // commits))
            git("add", ".", cwd=big_work)
            git("commit", "-qm", f"big {i}", cwd=big_work)
        git("push", "-q", "origin", "HEAD:main", cwd=big_work)
        size = sum(p.stat().st_size for p in (big / "objects").rglob("*") if p.is_file())
        source_url = source_url.replace("/src.git", "/big.git")
        elapsed, reqs, peak = run_tool("gitsync", "big")
        print(f"large repository ({size / 2**20:.0f} MB of objects): gitsync mirrored it in "
              f"{elapsed:.1f} s with {reqs} S3 requests; peak RSS of gitsync itself "
              f"{peak:.1f} MB; goal <= 64 MB: {'met' if peak <= 64 else 'MISSED'}")
finally:
    for p in procs:
        p.kill()
        p.wait()
    shutil.rmtree(work, ignore_errors=True)
