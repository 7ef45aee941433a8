//! What a full update did, in words a person reads at a glance: one line per repository
//! that needs a word (`gitsync sync`), and a one-line summary (`gitsync sync`, and
//! `gitsync run` at start-up) such as `7 repositories: 4 up to date, 1 fast-forwarded
//! (web, 2 commits), 1 not pulled (api: 1 unstaged change not committed), 1 failed (old:
//! fetch failed: ...)`. Commit ids are short (7 digits).

use super::syncer::Outcome;
use crate::model::Summary;
use crate::util::words::short_id;

use crate::util::words::plural;

/// One line for a repository that needs a word (`None`: up to date, nothing done).
pub fn describe(outcome: &Outcome) -> Option<String> {
    let s = &outcome.state;
    let branch = s.branch.as_deref().unwrap_or("HEAD");
    if !outcome.ok {
        return Some(format!(
            "{}: failed: {}",
            outcome.repo,
            s.error.as_deref().unwrap_or("see the log")
        ));
    }
    if let Some(f) = &outcome.forwarded {
        return Some(format!(
            "{}: fast-forwarded {branch} {}..{} ({})",
            outcome.repo,
            short_id(&f.from),
            short_id(&f.to),
            plural(f.commits, "commit")
        ));
    }
    let what = match s.state {
        Summary::UpToDate => return None,
        Summary::Behind => format!("behind by {}", plural(s.behind, "commit")),
        Summary::Ahead => format!("ahead by {} (not pushed)", plural(s.ahead, "commit")),
        Summary::Diverged => format!("diverged: {} ahead, {} behind", s.ahead, s.behind),
        Summary::NoUpstream => format!("{branch} has no upstream"),
        Summary::UpstreamGone => format!("{branch}'s upstream is gone"),
        Summary::Detached => "HEAD is detached".to_string(),
        Summary::Error => format!("error: {}", s.error.as_deref().unwrap_or("see the log")),
    };
    Some(match &s.pull_blocked {
        Some(why) if s.behind > 0 => format!("{}: {what}; not pulled: {why}", outcome.repo),
        _ => format!("{}: {what}", outcome.repo),
    })
}

/// At most this many repositories are named in one group of the summary.
const NAMED: usize = 3;

/// The one-line summary of `outcomes`: a count per kind, with the repositories of each
/// kind that needs a word named in parentheses (at most 3, then `+N more`).
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut groups: Vec<(&str, Vec<String>)> = vec![
        ("up to date", Vec::new()),
        ("fast-forwarded", Vec::new()),
        ("not pulled", Vec::new()),
        ("behind", Vec::new()),
        ("ahead", Vec::new()),
        ("to look at", Vec::new()),
        ("failed", Vec::new()),
    ];
    for o in outcomes {
        let s = &o.state;
        let (group, detail) = if !o.ok {
            (
                6,
                format!(
                    "{}: {}",
                    o.repo,
                    s.error.as_deref().unwrap_or("see the log")
                ),
            )
        } else if let Some(f) = &o.forwarded {
            (1, format!("{}, {}", o.repo, plural(f.commits, "commit")))
        } else {
            match (s.state, &s.pull_blocked) {
                (Summary::UpToDate, _) => (0, String::new()),
                (Summary::Behind, Some(why)) => (
                    2,
                    format!("{}: {}", o.repo, why.trim_start_matches("not pulled: ")),
                ),
                (Summary::Behind, None) => {
                    (3, format!("{}, {}", o.repo, plural(s.behind, "commit")))
                }
                (Summary::Ahead, _) => (4, format!("{}, {}", o.repo, plural(s.ahead, "commit"))),
                (Summary::Error, _) => (
                    6,
                    format!(
                        "{}: {}",
                        o.repo,
                        s.error.as_deref().unwrap_or("see the log")
                    ),
                ),
                (Summary::Diverged, _) => (5, format!("{}: diverged", o.repo)),
                (Summary::NoUpstream, _) => (5, format!("{}: no upstream", o.repo)),
                (Summary::UpstreamGone, _) => (5, format!("{}: upstream gone", o.repo)),
                (Summary::Detached, _) => (5, format!("{}: detached", o.repo)),
            }
        };
        groups[group].1.push(detail);
    }
    let mut parts = Vec::new();
    for (i, (word, items)) in groups.iter().enumerate() {
        if items.is_empty() && i != 0 {
            continue;
        }
        if i == 0 {
            parts.push(format!("{} {word}", items.len()));
            continue;
        }
        let mut named: Vec<String> = items.iter().take(NAMED).cloned().collect();
        if items.len() > NAMED {
            named.push(format!("+{} more", items.len() - NAMED));
        }
        parts.push(format!("{} {word} ({})", items.len(), named.join("; ")));
    }
    format!(
        "{} repositor{}: {}",
        outcomes.len(),
        if outcomes.len() == 1 { "y" } else { "ies" },
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::syncer::Forwarded;
    use crate::model::RepoState;

    fn outcome(repo: &str, state: Summary, tweak: impl FnOnce(&mut Outcome)) -> Outcome {
        let mut s = RepoState::error("laptop", repo, String::new());
        s.error = None;
        s.state = state;
        s.branch = Some("main".to_string());
        s.upstream = Some("origin/main".to_string());
        let mut o = Outcome {
            repo: repo.to_string(),
            ok: true,
            published: false,
            fast_forwarded: false,
            forwarded: None,
            state: s,
        };
        tweak(&mut o);
        o
    }

    /// The seven repositories of the issue's example: one of each kind.
    fn seven() -> Vec<Outcome> {
        vec![
            outcome("clean", Summary::UpToDate, |_| {}),
            outcome("behind", Summary::UpToDate, |o| {
                o.fast_forwarded = true;
                o.forwarded = Some(Forwarded {
                    from: "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string(),
                    to: "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".to_string(),
                    commits: 2,
                });
            }),
            outcome("dirtybehind", Summary::Behind, |o| {
                o.state.behind = 1;
                o.state.unstaged = 1;
                o.state.pull_blocked = Some("1 unstaged change not committed".to_string());
            }),
            outcome("ahead", Summary::Ahead, |o| o.state.ahead = 3),
            outcome("forked", Summary::Diverged, |o| {
                o.state.ahead = 1;
                o.state.behind = 1;
            }),
            outcome("scratch", Summary::NoUpstream, |_| {}),
            outcome("offline", Summary::Error, |o| {
                o.ok = false;
                o.state.error = Some("fetch failed: could not resolve host".to_string());
            }),
        ]
    }

    #[test]
    fn the_start_summary_reads_as_words() {
        insta::assert_snapshot!(summary(&seven()), @"7 repositories: 1 up to date, 1 fast-forwarded (behind, 2 commits), 1 not pulled (dirtybehind: 1 unstaged change not committed), 1 ahead (ahead, 3 commits), 2 to look at (forked: diverged; scratch: no upstream), 1 failed (offline: fetch failed: could not resolve host)");
    }

    #[test]
    fn sync_prints_a_line_per_repository_that_needs_a_word() {
        let lines: Vec<String> = seven().iter().filter_map(describe).collect();
        insta::assert_snapshot!(lines.join("\n"), @r"
        behind: fast-forwarded main 1111111..2222222 (2 commits)
        dirtybehind: behind by 1 commit; not pulled: 1 unstaged change not committed
        ahead: ahead by 3 commits (not pushed)
        forked: diverged: 1 ahead, 1 behind
        scratch: main has no upstream
        offline: failed: fetch failed: could not resolve host
        ");
    }

    #[test]
    fn long_groups_name_three_and_count_the_rest() {
        let many: Vec<Outcome> = (0..5)
            .map(|i| outcome(&format!("r{i}"), Summary::Ahead, |o| o.state.ahead = 1))
            .collect();
        insta::assert_snapshot!(summary(&many), @"5 repositories: 0 up to date, 5 ahead (r0, 1 commit; r1, 1 commit; r2, 1 commit; +2 more)");
    }
}
