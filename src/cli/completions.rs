//! Shell completion scripts: clap_complete's, for the commands a user types (not the
//! hidden ones), with the names a command takes (repositories, hosts, mirrors, deploys)
//! completed by asking `gitsync names KIND` when the shell completes.

use clap_complete::Shell;

/// The completion script for `shell`: bash, zsh and fish complete names too; the other
/// shells get clap_complete's script as it is.
pub fn script(shell: Shell) -> String {
    let mut command = super::public_command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "gitsync", &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => format!("{text}{BASH_NAMES}"),
        Shell::Zsh => zsh(&text),
        Shell::Fish => format!("{text}{FISH_NAMES}"),
        _ => text,
    }
}

/// bash: a wrapper around clap_complete's `_gitsync` that offers names where a command
/// takes them: hosts after `--host`/`--from`, repositories after `forget`, deploys after
/// `deploy`, mirrors after `mirror run` and `webhooks run|test`.
const BASH_NAMES: &str = r#"
_gitsync_with_names() {
    _gitsync "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" kind=""
    case "$prev" in
        --host|--from) kind=hosts ;;
    esac
    if [[ -z "$kind" && "$cur" != -* ]]; then
        case "${COMP_WORDS[1]}" in
            forget) kind=repos ;;
            deploy) kind=deploys ;;
            mirror|webhooks) [[ $COMP_CWORD -ge 3 ]] && kind=mirrors ;;
        esac
    fi
    [[ -n "$kind" ]] || return 0
    local names
    names=$(gitsync names "$kind" 2>/dev/null) || return 0
    [[ -n "$names" ]] || return 0
    if [[ "$kind" == hosts ]]; then
        COMPREPLY=()
    else
        local kept=() word
        for word in "${COMPREPLY[@]}"; do
            [[ "$word" == \[* || "$word" == \<* ]] || kept+=("$word")
        done
        COMPREPLY=("${kept[@]}")
    fi
    COMPREPLY+=($(compgen -W "$names" -- "$cur"))
}
complete -F _gitsync_with_names -o bashdefault -o default gitsync
"#;

/// fish: names as the arguments of the commands that take them.
const FISH_NAMES: &str = r#"
complete -c gitsync -n "__fish_gitsync_using_subcommand status; or __fish_gitsync_using_subcommand forget" -l host -f -r -a "(gitsync names hosts 2>/dev/null)"
complete -c gitsync -n "__fish_gitsync_using_subcommand bootstrap" -l from -f -r -a "(gitsync names hosts 2>/dev/null)"
complete -c gitsync -n "__fish_gitsync_using_subcommand forget" -f -a "(gitsync names repos 2>/dev/null)"
complete -c gitsync -n "__fish_gitsync_using_subcommand deploy" -f -a "(gitsync names deploys 2>/dev/null)"
complete -c gitsync -n "__fish_gitsync_using_subcommand mirror; and __fish_seen_subcommand_from run" -f -a "(gitsync names mirrors 2>/dev/null)"
complete -c gitsync -n "__fish_gitsync_using_subcommand webhooks; and __fish_seen_subcommand_from run test" -f -a "(gitsync names mirrors 2>/dev/null)"
"#;

/// zsh: the `_default` of each name argument becomes a function that asks gitsync.
fn zsh(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 512);
    for (i, line) in text.lines().enumerate() {
        let kind = if line.contains(":HOST:_default'") {
            Some("hosts")
        } else if line.contains("'*::repos -- Repository names") {
            Some("repos")
        } else if line.contains("::name -- The deploy") {
            Some("deploys")
        } else if line.contains("::names -- Mirror names") || line.contains("::name -- The mirror")
        {
            Some("mirrors")
        } else {
            None
        };
        match kind {
            Some(kind) => {
                out.push_str(&line.replacen(":_default'", &format!(":_gitsync_names_{kind}'"), 1))
            }
            None => out.push_str(line),
        }
        out.push('\n');
        if i == 0 {
            for kind in ["hosts", "repos", "deploys", "mirrors"] {
                out.push_str(&format!(
                    "_gitsync_names_{kind}() {{ local -a names; names=(${{(f)\"$(gitsync names {kind} 2>/dev/null)\"}}); compadd -a names }}\n"
                ));
            }
        }
    }
    out
}
