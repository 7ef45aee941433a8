#!/usr/bin/env python3
"""Benchmark: `gitsync deploy` of a generated tree of 20,000 files (about 200 MB; FILES and
MB override) to a loopback sshd (Debian's openssh-server, as tests/it/common/sshd.rs starts
it), side by side with its baselines, in one run:

1. The first ship, against a plain `rsync -a` of the same tree into a folder (the floor).
2. Ships after one-file commits (ROUNDS, default 3, medians), against the rsync-over-ssh
   sync script's approach for the same change: the same secret scan (gitleaks over the
   tree), then rsync into the live folder without `--delete` (goal: at most 0.10x, issue
   22); the ship's transfer (as it reports it) against plain `rsync -a --delete` of the
   same change (goal: at most 1.3x); bytes sent (goal: at most 1% of the tree) and the new
   release's own disk use (goal: at most 1% of the tree, the rest hard links).
3. The same ship with the scan off.

BENCH_GITSYNC_LOG=gitsync=debug prints each ship's debug log (where its time went).

    cargo build --release && make deps && python3 benches/deploy.py
"""
import json, os, pathlib, re, shutil, socket, statistics, subprocess, sys, tempfile, time

here = pathlib.Path(__file__).resolve().parent
project = here.parent
target_dir = os.environ.get("CARGO_TARGET_DIR", str(project / "target"))
binary = os.environ.get("GITSYNC_BIN", f"{target_dir}/release/gitsync")
files = int(os.environ.get("FILES", "20000"))
megabytes = int(os.environ.get("MB", "200"))
rounds = int(os.environ.get("ROUNDS", "3"))
venv_bin = project / ".venv" / "bin"
for path in (binary, "/usr/sbin/sshd", str(venv_bin / "gitleaks")):
    if not os.access(path, os.X_OK):
        sys.exit(f"{path} missing: run `cargo build --release` and `make deps` first")

work = pathlib.Path(tempfile.mkdtemp(prefix="gitsync-deploy-bench-"))
home = work / "home"
(home / ".gitsync").mkdir(parents=True)
(home / ".gitconfig").write_text(
    "[user]\n\tname = bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n")
env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
           PATH=f"{venv_bin}:{os.environ.get('PATH', '')}",
           GITSYNC_LOG=os.environ.get("BENCH_GITSYNC_LOG", "warn"))
procs = []


def run(*args, cwd=None, **kw):
    return subprocess.run(list(args), cwd=cwd, env=env, check=True, capture_output=True, **kw)


last_stderr = [""]


def timed(*args, cwd=None):
    start = time.monotonic()
    out = run(*args, cwd=cwd)
    last_stderr[0] = out.stderr.decode(errors="replace")
    return time.monotonic() - start, out.stdout.decode()


def du(path):
    return int(run("du", "-sb", str(path)).stdout.split()[0])


try:
    # sshd on loopback, per tests/support/sshd-rsync-recipe.sh.
    sshd_dir = work / "sshd"
    sshd_dir.mkdir()
    os.makedirs("/run/sshd", exist_ok=True)
    for key in ("host_key", "client_key"):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshd_dir / key))
    shutil.copy(sshd_dir / "client_key.pub", sshd_dir / "authorized_keys")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (sshd_dir / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {sshd_dir}/host_key\nPidFile {sshd_dir}/sshd.pid\n"
        f"AuthorizedKeysFile {sshd_dir}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n")
    log = open(sshd_dir / "sshd.log", "w")
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_dir / "sshd_config")],
                            stderr=log, stdout=subprocess.DEVNULL)
    procs.append(sshd)
    for _ in range(200):
        if "Server listening" in (sshd_dir / "sshd.log").read_text():
            break
        time.sleep(0.05)
    ssh = (f"ssh -p {port} -i {sshd_dir}/client_key -o IdentitiesOnly=yes -o BatchMode=yes "
           f"-o UserKnownHostsFile={sshd_dir}/known_hosts -o StrictHostKeyChecking=accept-new")

    # The tree: FILES text files in 100 folders, MB in all, committed.
    root = work / "root"
    repo = root / "site"
    repo.mkdir(parents=True)
    run("git", "init", "-q", cwd=repo)
    size = megabytes * 1024 * 1024 // files
    alphabet = b"abcdefghijklmnopqrstuvwxyz      \n"
    table = bytes(alphabet[i % len(alphabet)] for i in range(256))
    for i in range(files):
        d = repo / f"d{i % 100:02}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.txt").write_bytes(os.urandom(size).translate(table))
    run("git", "add", ".", cwd=repo)
    run("git", "commit", "-qm", "tree", cwd=repo)
    tree_bytes = du(repo) - du(repo / ".git")
    targets = work / "targets"
    (home / ".gitsync/config.yml").write_text(
        f"root: {root}\nrepositories: [site]\ndeploy:\n  - name: web\n    repo: site\n    branch: main\n"
        f"    keep: 5\n    targets:\n      - {{name: vm, host: root@127.0.0.1, port: {port}, path: {targets}/vm}}\n"
        f"    ssh: {{identity: {sshd_dir}/client_key, known_hosts: {sshd_dir}/known_hosts, "
        "strict_host_key_checking: accept-new}\n    scan: {tool: gitleaks}\n")

    # 1. First ship against the floor.
    first, _ = timed(binary, "deploy", "web")
    floor_dir = work / "floor"
    floor, _ = timed("rsync", "-a", "--exclude=.git", "-e", ssh, f"{repo}/", f"root@127.0.0.1:{floor_dir}/")
    print(f"tree: {files} files, {tree_bytes / 2**20:.0f} MB")
    print(f"first ship: gitsync {first:.2f} s (scan included), plain rsync -a {floor:.2f} s (floor), "
          f"ratio {first / floor:.2f}x")

    # 2. One-file commits, ROUNDS of them, interleaved: gitsync against the seed's approach
    # (scan + rsync into the live folder without --delete) and against plain
    # `rsync -a --delete` of the same change (the transfer's floor). The seed's live folder
    # and the floor's folder start as copies of the tree.
    live = work / "live"
    run("rsync", "-a", "--exclude=.git", "-e", ssh, f"{repo}/", f"root@127.0.0.1:{live}/")
    ours_t, seed_t, floor_t, transfer_t, seed_scan_t = [], [], [], [], []
    for r in range(rounds):
        previous_release = (targets / "vm" / "current").resolve()
        (repo / "d00" / "f0.txt").write_text(f"one changed file, round {r}\n")
        run("git", "commit", "-qam", f"one file {r}", cwd=repo)
        ours, out = timed(binary, "deploy", "web")
        ours_t.append(ours)
        if r == 0:
            print("  gitsync said: " + out.strip().replace("\n", "\n  gitsync said: "))
        if os.environ.get("BENCH_GITSYNC_LOG"):
            print(f"  round {r}, gitsync logged:\n" + last_stderr[0])
        found = re.search(r"transfer ([\d.]+) s", out)
        if not found:
            sys.exit(f"the ship did not say its transfer time: {out}")
        transfer_t.append(float(found.group(1)))
        state = json.loads((home / ".gitsync/deploy/web/state.json").read_text())
        sent = state["targets"]["vm"]["bytes_sent"]
        # du counts a file with several links once across its arguments: the second line is
        # what the new release holds that the previous one does not.
        both = run("du", "-sb", str(previous_release), str((targets / "vm" / "current").resolve()))
        new_release = int(both.stdout.split(b"\n")[1].split()[0])
        start = time.monotonic()
        scan_dir = work / f"seed-scan-{r}"
        scan_dir.mkdir()
        subprocess.run([str(venv_bin / "gitleaks"), "dir", "--no-banner", "--exit-code", "2",
                        str(repo)], cwd=scan_dir, env=env, capture_output=True)
        seed_scan_t.append(time.monotonic() - start)
        _, seed_out = timed("rsync", "-a", "--stats", "--exclude=.git", "-e", ssh, f"{repo}/",
                            f"root@127.0.0.1:{live}/")
        seed_t.append(time.monotonic() - start)
        seed_sent = int(re.search(r"Total bytes sent: ([\d,]+)", seed_out).group(1).replace(",", ""))
        floor, _ = timed("rsync", "-a", "--delete", "--exclude=.git", "-e", ssh, f"{repo}/",
                         f"root@127.0.0.1:{floor_dir}/")
        floor_t.append(floor)
    ours, seed, floor = (statistics.median(x) for x in (ours_t, seed_t, floor_t))
    transfer, seed_scan_time = statistics.median(transfer_t), statistics.median(seed_scan_t)
    print(f"ship after a one-file commit, {rounds} rounds, medians: gitsync {ours:.2f} s, seed's "
          f"scan + rsync {seed:.2f} s (ratio {ours / seed:.2f}x; goal <= 0.10x: "
          f"{'met' if ours <= 0.10 * seed else 'MISSED'})")
    print(f"  transfer: gitsync {transfer:.2f} s, plain rsync -a --delete {floor:.2f} s (ratio "
          f"{transfer / floor:.2f}x; goal <= 1.3x: {'met' if transfer <= 1.3 * floor else 'MISSED'})")
    print(f"  bytes sent: gitsync {sent:,} ({100 * sent / tree_bytes:.3f}% of the tree; goal <= 1%: "
          f"{'met' if sent <= tree_bytes / 100 else 'MISSED'}), seed {seed_sent:,}")
    print(f"  disk use of the new release: {new_release:,} bytes ({100 * new_release / tree_bytes:.3f}% "
          f"of the tree; goal <= 1%: {'met' if new_release <= tree_bytes / 100 else 'MISSED'})")
    print("  runs (s): gitsync " + ", ".join(f"{t:.2f}" for t in ours_t) + "; seed "
          + ", ".join(f"{t:.2f}" for t in seed_t) + "; transfer " + ", ".join(f"{t:.2f}" for t in transfer_t)
          + "; plain rsync " + ", ".join(f"{t:.2f}" for t in floor_t))

    # 3. The same ship with the scan off, on a fresh one-file commit.
    (repo / "d01" / "f1.txt").write_text("another changed file\n")
    run("git", "commit", "-qam", "another", cwd=repo)
    cfg = (home / ".gitsync/config.yml").read_text()
    (home / ".gitsync/config.yml").write_text(cfg.replace("tool: gitleaks", "tool: off"))
    unscanned, _ = timed(binary, "deploy", "web")
    # Not the scan's share: with the scan on, its view also hashes the tree for the record,
    # which a ship without it does itself.
    print(f"  the same ship with the scan off: {unscanned:.2f} s (with it: {ours:.2f} s; "
          f"the seed's own scan took {seed_scan_time:.2f} s)")
finally:
    for p in procs:
        p.kill()
        p.wait()
    shutil.rmtree(work, ignore_errors=True)
