#!/usr/bin/env python3
"""Benchmark: what an idle daemon asks of AWS, per hour.

One host with 20 idle repositories on the `aws` backend against moto's server (from
.venv, see `make deps`), default `pull.interval` (5m). Once the daemon is ready, moto's
request recorder counts every request for SECONDS (default 600), by operation; the counts
are scaled to one hour. Goals per idle hour: at most 200 ReceiveMessage long polls, 12
heartbeats (PutItem of the `#host` item), 0 state writes (PutItem of a repository).
Baseline printed beside it: GitArgus polls every 40 s with short receives and rewrites the
whole host item on every update.

    python3 benches/aws_idle.py [SECONDS]   (GITSYNC_BIN overrides the binary)
"""
import base64, collections, json, os, pathlib, shutil, subprocess, sys, tempfile, time
import urllib.request
import moto_server

here = pathlib.Path(__file__).resolve().parent
target = os.environ.get("CARGO_TARGET_DIR", str(here.parent / "target"))
binary = os.environ.get("GITSYNC_BIN", f"{target}/release/gitsync")
seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 600
if not os.access(binary, os.X_OK):
    sys.exit(f"{binary} missing: run `cargo build --release` first")

work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-awsidle-"))
home = work / "home"
(home / ".gitsync").mkdir(parents=True)
(home / ".gitconfig").write_text(
    "[user]\n\tname = bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n")
env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", AWS_ACCESS_KEY_ID="test",
           AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true")

bare = work / "remote.git"
subprocess.run(["git", "init", "-q", "--bare", str(bare)], env=env, check=True)
seed = work / "seed"
subprocess.run(["git", "init", "-q", str(seed)], env=env, check=True)
(seed / "a.txt").write_text("a\n")
subprocess.run(["git", "-C", str(seed), "add", "."], env=env, check=True)
subprocess.run(["git", "-C", str(seed), "commit", "-qm", "a"], env=env, check=True)
subprocess.run(["git", "-C", str(seed), "push", "-q", str(bare), "main"], env=env, check=True)
for i in range(20):
    subprocess.run(["git", "clone", "-q", str(bare), str(work / "root" / f"r{i}")], env=env,
                   check=True)

recording = work / "recording.jsonl"
moto, port = moto_server.start(dict(env, MOTO_RECORDER_FILEPATH=str(recording)))
url = f"http://127.0.0.1:{port}"
(home / ".gitsync" / "config.yml").write_text(
    f"hostname: idle\nroot: {work / 'root'}\nbackend: aws\naws:\n  region: us-east-1\n"
    f"  endpoint_url: {url}\n  dynamodb: {{table: git}}\n  sqs: {{queue: idle.fifo}}\n"
    '  sns: {topic: {arn: "arn:aws:sns:us-east-1:123456789012:git.fifo"}}\n')
subprocess.run([binary, "aws", "setup"], env=env, check=True, stdout=subprocess.DEVNULL)
log = home / "daemon.log"
daemon = subprocess.Popen([binary, "run"], env=env, stderr=log.open("w"),
                          stdout=subprocess.DEVNULL)


def post(path):
    urllib.request.urlopen(urllib.request.Request(url + path, method="POST"), timeout=10).read()


try:
    for _ in range(600):
        if "ready" in log.read_text():
            break
        time.sleep(0.1)
    else:
        sys.exit("the daemon never got ready:\n" + log.read_text())
    time.sleep(2)  # let the start-up writes finish
    post("/moto-api/recorder/reset-recording")
    post("/moto-api/recorder/start-recording")
    time.sleep(seconds)
    post("/moto-api/recorder/stop-recording")
finally:
    daemon.terminate()
    daemon.wait(timeout=60)
    moto.terminate()
    moto.wait(timeout=30)

counts = collections.Counter()
for line in recording.read_text().splitlines() if recording.exists() else []:
    entry = json.loads(line)
    headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    target_header = headers.get("x-amz-target", "")
    operation = target_header.split(".")[-1] if target_header else ""
    if not operation:
        for part in body.split("&"):
            if part.startswith("Action="):
                operation = part[len("Action="):]
    if operation == "PutItem":
        item = json.loads(body).get("Item", {})
        operation = "PutItem (heartbeat)" if item.get("repo", {}).get("S") == "#host" \
            else "PutItem (state write)"
    counts[operation or "other"] += 1

scale = 3600 / seconds
print(f"requests of one idle host with 20 repositories, over {seconds} s, scaled to an hour:")
for operation, count in sorted(counts.items()):
    print(f"  {operation:28} {count:5d}   -> {count * scale:7.1f} per hour")
receives = counts["ReceiveMessage"] * scale
heartbeats = counts["PutItem (heartbeat)"] * scale
writes = counts["PutItem (state write)"] * scale
print(f"  goals: ReceiveMessage <= 200/h: {'met' if receives <= 200 else 'MISSED'} ({receives:.0f});"
      f" heartbeats <= 12/h: {'met' if heartbeats <= 12 else 'MISSED'} ({heartbeats:.0f});"
      f" state writes 0: {'met' if writes == 0 else 'MISSED'} ({writes:.0f})")
print("  GitArgus baseline: a receive every 40 s (90/h) plus a whole-host item rewrite on "
      "every update; its 10 s delivery delay and 40 s sleep make each push wait 10-50 s")
shutil.rmtree(work, ignore_errors=True)
