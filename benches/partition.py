#!/usr/bin/env python3
"""Benchmark: partition sync of a repository with about 100 MB of history.

A source repository is generated with ~100 MB of incompressible history (50 commits of
2 MB each). Through a directory store, on loopback:

1. The first full sync (produce + consume) against the physical floor, `git clone
   --mirror` + `git push --mirror` of the same repository; and the peak RSS (VmHWM) of the
   gitsync process itself, not its git children, as producer and as consumer. Goal: at
   most 64 MB each.
2. One small commit later: the bytes the producer uploads (new objects in the store)
   against git-partition-sync's approach for the same data, a tar+gzip of a full clone (computed
   here). Goal: at least 100x fewer bytes. And the produce + consume wall time of that
   increment. Goal: at most 2 s.

    python3 benches/partition.py   (GITSYNC_BIN overrides the binary; MB the history size)
"""
import io, os, pathlib, shutil, subprocess, sys, tarfile, tempfile, time

here = pathlib.Path(__file__).resolve().parent
target = os.environ.get("CARGO_TARGET_DIR", str(here.parent / "target"))
binary = os.environ.get("GITSYNC_BIN", f"{target}/release/gitsync")
megabytes = int(os.environ.get("MB", "100"))
if not os.access(binary, os.X_OK):
    sys.exit(f"{binary} missing: run `cargo build --release` first")
work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-partition-bench-"))
home = work / "home"
home.mkdir()
(home / ".gitconfig").write_text(
    "[user]\n\tname = bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = master\n")
env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def tree_size(path):
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


source = work / "source.git"
git("init", "-q", "--bare", str(source), cwd=work)
src_work = work / "src-work"
git("clone", "-q", str(source), str(src_work), cwd=work)
commits = 50
chunk = megabytes * 1024 * 1024 // commits
for i in range(commits):
    (src_work / f"blob{i:03}.bin").write_bytes(os.urandom(chunk))
    git("add", ".", cwd=src_work)
    git("commit", "-qm", f"commit {i}", cwd=src_work)
git("push", "-q", "origin", "HEAD:master", cwd=src_work)

keys = work / "keys"
subprocess.run([binary, "partition", "keygen", str(keys)], env=env, check=True,
               stdout=subprocess.DEVNULL)
recipient = (keys / "recipient.txt").read_text().strip()
public = (keys / "signing.pub").read_text().strip()
store = work / "store"
dest = work / "dest.git"
git("init", "-q", "--bare", str(dest), cwd=work)
pairs = (f"  pairs:\n    - source: {{url: \"file://{source}\", branch: master}}\n"
         f"      destination: {{url: \"{dest}\", branch: main}}\n")
homes = {}
for role in ("producer", "consumer"):
    h = work / role
    (h / ".gitsync").mkdir(parents=True)
    shutil.copy(home / ".gitconfig", h / ".gitconfig")
    extra = (f"  recipients: [{recipient}]\n  signing_key: {keys / 'signing.key'}\n"
             if role == "producer" else
             f"  identity: {keys / 'identity.age'}\n  producer_public_key: \"{public}\"\n")
    (h / ".gitsync" / "config.yml").write_text(
        f"partition:\n  role: {role}\n  store: file://{store}\n{extra}{pairs}")
    homes[role] = h


def run_measured(role):
    """Runs one round; returns (seconds, peak RSS of the gitsync process in MB)."""
    command = "produce" if role == "producer" else "consume"
    start = time.monotonic()
    proc = subprocess.Popen([binary, "partition", command, "--once"],
                            env=dict(env, HOME=str(homes[role])), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    peak = 0
    status = pathlib.Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.005)
    out, err = proc.communicate()
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{role} failed: {out.decode()}{err.decode()}")
    return elapsed, peak / 1024


# 1. The first full sync, and the floor.
full_produce, rss_producer = run_measured("producer")
full_consume, rss_consumer = run_measured("consumer")
floor_dest = work / "floor-dest.git"
git("init", "-q", "--bare", str(floor_dest), cwd=work)
start = time.monotonic()
mirror = work / "floor-mirror.git"
git("clone", "-q", "--mirror", str(source), str(mirror), cwd=work)
git("push", "-q", "--mirror", str(floor_dest), cwd=mirror)
floor = time.monotonic() - start
got = subprocess.run(["git", "rev-parse", "main"], cwd=dest, env=env, capture_output=True,
                     text=True).stdout.strip()
want = subprocess.run(["git", "rev-parse", "master"], cwd=source, env=env,
                      capture_output=True, text=True).stdout.strip()
assert got == want, f"destination at {got}, source at {want}"

# 2. One small commit.
(src_work / "small.txt").write_text("one small change\n")
git("add", ".", cwd=src_work)
git("commit", "-qm", "small", cwd=src_work)
git("push", "-q", "origin", "HEAD:master", cwd=src_work)
before = tree_size(store)
inc_produce, _ = run_measured("producer")
uploaded = tree_size(store) - before + (store / "manifest").stat().st_size
inc_consume, _ = run_measured("consumer")
got = subprocess.run(["git", "rev-parse", "main"], cwd=dest, env=env, capture_output=True,
                     text=True).stdout.strip()
want = subprocess.run(["git", "rev-parse", "master"], cwd=source, env=env,
                      capture_output=True, text=True).stdout.strip()
assert got == want, f"destination at {got}, source at {want} after the increment"

# Seed 000: a tar+gzip of a full (non-bare) clone, for every change.
clone = work / "seed000-clone"
git("clone", "-q", str(source), str(clone), cwd=work)
buffer = io.BytesIO()
with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
    tar.add(clone, arcname="repo")
seed = buffer.tell()

mb = 1024 * 1024
print(f"partition sync of a repository with {megabytes} MB of history ({commits} commits), directory store:")
print(f"  first full sync: produce {full_produce:6.2f} s + consume {full_consume:6.2f} s"
      f" = {full_produce + full_consume:6.2f} s; git clone --mirror + push --mirror {floor:6.2f} s"
      f" ({(full_produce + full_consume) / floor:.2f}x the floor)")
print(f"  peak RSS of gitsync itself: producer {rss_producer:5.1f} MB, consumer {rss_consumer:5.1f} MB;"
      f" goal <= 64 MB: {'met' if max(rss_producer, rss_consumer) <= 64 else 'MISSED'}")
print(f"  one small commit: uploaded {uploaded} bytes (bundle + manifest);"
      f" git-partition-sync would upload {seed / mb:.1f} MB (tar+gzip of a full clone):"
      f" {seed / uploaded:,.0f}x fewer; goal >= 100x: {'met' if seed / uploaded >= 100 else 'MISSED'}")
print(f"  increment wall time: produce {inc_produce:5.2f} s + consume {inc_consume:5.2f} s"
      f" = {inc_produce + inc_consume:5.2f} s; goal <= 2 s:"
      f" {'met' if inc_produce + inc_consume <= 2 else 'MISSED'}")
shutil.rmtree(work, ignore_errors=True)
