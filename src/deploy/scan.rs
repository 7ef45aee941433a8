//! The secret gate before a ship: the exported tree is scanned, and anything but a clean
//! answer from a real scanner blocks the ship (it fails closed).
//!
//! - gitleaks (`gitleaks dir`, v8.19 or newer): `--exit-code 2` so that 1 means an error,
//!   an explicit `-c` config so a repository's own `.gitleaks.toml` cannot switch the rules
//!   off, `--ignore-gitleaks-allow`, a JSON report in a file (gitleaks `cmd/root.go`,
//!   `cmd/directory.go`).
//! - kingfisher (`kingfisher scan DIR --git-history none --no-validate -f json`): 0 clean,
//!   200 findings, 205 validated findings, anything else an error (its README).
//! - detect-secrets (`detect-secrets scan --all-files DIR`): always exits 0; the JSON
//!   `results` map is the answer.
//!
//! `auto` picks the first of them on `PATH`; `scan.tool` may also be a scanner's path (a
//! systemd unit's `PATH` has neither `~/.local/bin` nor a virtualenv). Only `off` ships
//! without a scan.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One secret found: where, and by which rule (the secret itself is never kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Path relative to the exported tree.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// The scanner's rule id, such as `aws-access-token`.
    pub rule: String,
}

/// Why a ship is blocked, or that it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The scanner ran and found nothing.
    Clean {
        /// The scanner.
        tool: String,
    },
    /// `scan.tool: off`.
    Off,
    /// Secrets found: blocked.
    Found {
        /// The scanner.
        tool: String,
        /// What it found.
        findings: Vec<Finding>,
    },
    /// The scanner is missing, crashed, exited with an unexpected code, or wrote a report
    /// that cannot be read: blocked.
    Failed(String),
}

impl Verdict {
    /// Whether the ship may go on.
    pub fn passes(&self) -> bool {
        matches!(self, Verdict::Clean { .. } | Verdict::Off)
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Clean { tool } => format!("{tool}: no secrets found"),
            Verdict::Off => "secret scan off (scan.tool: off): shipped unscanned".to_string(),
            Verdict::Found { tool, findings } => {
                let list: Vec<String> = findings
                    .iter()
                    .take(10)
                    .map(|f| format!("{}:{} ({})", f.file, f.line, f.rule))
                    .collect();
                format!(
                    "{tool} found {} secret{} (values redacted): {}{}; nothing was shipped",
                    findings.len(),
                    if findings.len() == 1 { "" } else { "s" },
                    list.join(", "),
                    if findings.len() > 10 { ", ..." } else { "" }
                )
            }
            Verdict::Failed(why) => format!("secret scan failed, so nothing was shipped: {why}"),
        }
    }
}

/// The gitleaks rules used when the config names none: gitleaks' own defaults, with
/// nothing switched off.
pub const DEFAULT_GITLEAKS_CONFIG: &str = "# gitsync's gitleaks rules: gitleaks' defaults, nothing switched off.\n[extend]\nuseDefault = true\n";

/// Where `name` is on `PATH`, if anywhere.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

/// The scanners gitsync runs, by the name their programs start with.
const KINDS: [&str; 3] = ["gitleaks", "kingfisher", "detect-secrets"];

/// For a `scan.tool` that is a path (it holds a `/`; `~/` is the home folder): the scanner
/// its file name names (`~/.venv/bin/gitleaks` is gitleaks), or `None` when it is not a
/// path or names none.
pub fn kind_of_path(tool: &str) -> Option<&'static str> {
    if !tool.contains('/') {
        return None;
    }
    let path = crate::config::expand_tilde(tool);
    let name = path.file_name()?.to_str()?;
    KINDS.into_iter().find(|k| name.starts_with(k))
}

/// The scanner `tool` names (`auto`: the first installed; a path: that program), or why
/// there is none.
pub fn pick(tool: &str) -> Result<(String, PathBuf), String> {
    if let Some(kind) = kind_of_path(tool) {
        let path = crate::config::expand_tilde(tool);
        let runnable = std::fs::metadata(&path).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        return if runnable {
            Ok((kind.to_string(), path))
        } else {
            Err(format!(
                "scan.tool {}: no program there (install the scanner there, or fix the path)",
                path.display()
            ))
        };
    }
    let candidates: Vec<&str> = match tool {
        "auto" => vec!["gitleaks", "kingfisher", "detect-secrets"],
        other => vec![other],
    };
    for name in &candidates {
        if let Some(path) = on_path(name) {
            return Ok((name.to_string(), path));
        }
    }
    Err(format!(
        "no secret scanner found on PATH (looked for {}; a systemd unit's PATH has neither ~/.local/bin nor a virtualenv): install gitleaks (see the README), or set scan.tool to its path, such as ~/.local/bin/gitleaks",
        candidates.join(", ")
    ))
}

/// Scans `tree` with `tool` (`auto`, a scanner's name, or `off`); `config`: the rules file
/// (gitleaks and kingfisher); `scratch`: a folder for the report and the default rules.
/// Never panics; every failure is a blocking [`Verdict::Failed`].
pub fn scan(tool: &str, config: Option<&Path>, tree: &Path, scratch: &Path) -> Verdict {
    if tool == "off" {
        return Verdict::Off;
    }
    let (name, binary) = match pick(tool) {
        Ok(found) => found,
        Err(why) => return Verdict::Failed(why),
    };
    if let Err(e) = std::fs::create_dir_all(scratch) {
        return Verdict::Failed(format!("{}: {e}", scratch.display()));
    }
    match name.as_str() {
        "gitleaks" => gitleaks(&binary, config, tree, scratch),
        "kingfisher" => kingfisher(&binary, config, tree, scratch),
        "detect-secrets" => detect_secrets(&binary, tree, scratch),
        other => Verdict::Failed(format!("unknown scanner {other:?}")),
    }
}

fn relative(tree: &Path, file: &str) -> String {
    let path = Path::new(file);
    path.strip_prefix(tree)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| file.trim_start_matches("./").to_string())
}

fn run(command: &mut Command, what: &str) -> Result<std::process::Output, String> {
    command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))
}

fn gitleaks(binary: &Path, config: Option<&Path>, tree: &Path, scratch: &Path) -> Verdict {
    let config = match config {
        Some(c) => c.to_path_buf(),
        None => {
            let path = scratch.join("gitleaks.toml");
            if let Err(e) = std::fs::write(&path, DEFAULT_GITLEAKS_CONFIG) {
                return Verdict::Failed(format!("{}: {e}", path.display()));
            }
            path
        }
    };
    let report = scratch.join("gitleaks-report.json");
    let _ = std::fs::remove_file(&report);
    let output = match run(
        Command::new(binary)
            .arg("dir")
            .arg("--no-banner")
            .args(["--exit-code", "2"])
            .arg("-c")
            .arg(&config)
            .arg("--ignore-gitleaks-allow")
            .args(["--report-format", "json", "--report-path"])
            .arg(&report)
            .args(["--log-level", "error"])
            .arg(tree)
            // The repository's own `.gitleaksignore` is read from the working folder:
            // run from gitsync's scratch folder instead.
            .current_dir(scratch)
            .env_remove("GITLEAKS_CONFIG")
            .env_remove("GITLEAKS_CONFIG_TOML"),
        "gitleaks",
    ) {
        Ok(o) => o,
        Err(why) => return Verdict::Failed(why),
    };
    let code = output.status.code();
    if !matches!(code, Some(0) | Some(2)) {
        return Verdict::Failed(format!(
            "gitleaks exited with {} ({})",
            code.map_or("a signal".to_string(), |c| format!("code {c}")),
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("no message")
        ));
    }
    let text = match std::fs::read(&report) {
        Ok(t) => t,
        Err(e) => return Verdict::Failed(format!("gitleaks wrote no readable report: {e}")),
    };
    #[derive(serde::Deserialize)]
    struct Leak {
        #[serde(rename = "RuleID")]
        rule: String,
        #[serde(rename = "File")]
        file: String,
        #[serde(rename = "StartLine")]
        line: u64,
    }
    let leaks: Vec<Leak> = match serde_json::from_slice(&text) {
        Ok(l) => l,
        Err(e) => return Verdict::Failed(format!("gitleaks' report is unreadable: {e}")),
    };
    if code == Some(0) && leaks.is_empty() {
        return Verdict::Clean {
            tool: "gitleaks".to_string(),
        };
    }
    if leaks.is_empty() {
        return Verdict::Failed("gitleaks reported findings but listed none".to_string());
    }
    Verdict::Found {
        tool: "gitleaks".to_string(),
        findings: leaks
            .into_iter()
            .map(|l| Finding {
                file: relative(tree, &l.file),
                line: l.line,
                rule: l.rule,
            })
            .collect(),
    }
}

fn kingfisher(binary: &Path, config: Option<&Path>, tree: &Path, scratch: &Path) -> Verdict {
    let mut command = Command::new(binary);
    command
        .arg("scan")
        .arg(tree)
        .args([
            "--git-history",
            "none",
            "--no-validate",
            "--no-update-check",
            "-f",
            "json",
        ])
        .current_dir(scratch);
    if let Some(c) = config {
        command.arg("--rules-path").arg(c);
    }
    let output = match run(&mut command, "kingfisher") {
        Ok(o) => o,
        Err(why) => return Verdict::Failed(why),
    };
    let code = output.status.code();
    if !matches!(code, Some(0) | Some(200) | Some(205)) {
        return Verdict::Failed(format!("kingfisher exited with {code:?}"));
    }
    // JSON lines or one document: every object with a rule and a location is a finding.
    let text = String::from_utf8_lossy(&output.stdout);
    let mut findings = Vec::new();
    let mut parsed_any = false;
    for value in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
        let Ok(value) = value else {
            return Verdict::Failed("kingfisher's report is unreadable".to_string());
        };
        parsed_any = true;
        collect_kingfisher(&value, tree, &mut findings);
    }
    if code == Some(0) && findings.is_empty() {
        return Verdict::Clean {
            tool: "kingfisher".to_string(),
        };
    }
    if findings.is_empty() || !parsed_any {
        return Verdict::Failed("kingfisher reported findings that cannot be read".to_string());
    }
    Verdict::Found {
        tool: "kingfisher".to_string(),
        findings,
    }
}

fn collect_kingfisher(value: &serde_json::Value, tree: &Path, out: &mut Vec<Finding>) {
    match value {
        serde_json::Value::Array(items) => {
            items.iter().for_each(|v| collect_kingfisher(v, tree, out))
        }
        serde_json::Value::Object(map) => {
            let rule = map
                .get("rule")
                .and_then(|r| r.get("id").or(Some(r)))
                .and_then(|r| r.as_str());
            let file = map
                .get("finding")
                .and_then(|f| f.get("path"))
                .or_else(|| map.get("path"))
                .and_then(|p| p.as_str());
            if let (Some(rule), Some(file)) = (rule, file) {
                let line = map
                    .get("finding")
                    .and_then(|f| f.get("line"))
                    .and_then(|l| l.as_u64())
                    .unwrap_or(0);
                out.push(Finding {
                    file: relative(tree, file),
                    line,
                    rule: rule.to_string(),
                });
            } else {
                map.values().for_each(|v| collect_kingfisher(v, tree, out));
            }
        }
        _ => {}
    }
}

fn detect_secrets(binary: &Path, tree: &Path, scratch: &Path) -> Verdict {
    let output = match run(
        Command::new(binary)
            .args(["scan", "--all-files"])
            // Inline `pragma: allowlist secret` comments are the repository's to write:
            // they do not switch the gate off.
            .args([
                "--disable-filter",
                "detect_secrets.filters.allowlist.is_line_allowlisted",
            ])
            .arg(".")
            .current_dir(tree)
            .env("HOME", scratch),
        "detect-secrets",
    ) {
        Ok(o) => o,
        Err(why) => return Verdict::Failed(why),
    };
    if output.status.code() != Some(0) {
        return Verdict::Failed(format!(
            "detect-secrets exited with {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let report: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(v) => v,
        Err(e) => return Verdict::Failed(format!("detect-secrets' report is unreadable: {e}")),
    };
    let Some(results) = report.get("results").and_then(|r| r.as_object()) else {
        return Verdict::Failed("detect-secrets' report has no `results`".to_string());
    };
    let findings: Vec<Finding> = results
        .iter()
        .flat_map(|(file, items)| {
            items
                .as_array()
                .into_iter()
                .flatten()
                .map(move |item| Finding {
                    file: relative(tree, file),
                    line: item
                        .get("line_number")
                        .and_then(|l| l.as_u64())
                        .unwrap_or(0),
                    rule: item
                        .get("type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("secret")
                        .to_string(),
                })
        })
        .collect();
    if findings.is_empty() {
        Verdict::Clean {
            tool: "detect-secrets".to_string(),
        }
    } else {
        Verdict::Found {
            tool: "detect-secrets".to_string(),
            findings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_scanner_blocks() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = scan(
            "no-such-scanner-xyz",
            None,
            dir.path(),
            &dir.path().join("s"),
        );
        assert!(!v.passes(), "{v:?}");
        assert!(v.describe().contains("nothing was shipped"));
        assert!(scan("off", None, dir.path(), dir.path()).passes());
    }

    #[test]
    fn findings_name_file_line_and_rule_only() {
        let v = Verdict::Found {
            tool: "gitleaks".into(),
            findings: vec![Finding {
                file: "config/aws.txt".into(),
                line: 3,
                rule: "aws-access-token".into(),
            }],
        };
        assert_eq!(
            v.describe(),
            "gitleaks found 1 secret (values redacted): config/aws.txt:3 (aws-access-token); nothing was shipped"
        );
    }
}
