//! `gitsync generate man|completions DIR`: the man page (clap_mangen) and the bash, zsh
//! and fish completions (clap_complete), made from the command-line definition itself so
//! they cannot drift from it. Used by `packaging/build-deb.sh`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

use super::{Cli, CliError};

/// Arguments of `gitsync generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to write.
    #[command(subcommand)]
    pub what: What,
}

/// The generated files.
#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Write `gitsync.1` (and one page per subcommand, `gitsync-<name>.1`) into DIR.
    Man {
        /// The folder to write into (created if missing).
        dir: PathBuf,
    },
    /// Write `gitsync.bash`, `_gitsync` (zsh) and `gitsync.fish` into DIR.
    Completions {
        /// The folder to write into (created if missing).
        dir: PathBuf,
    },
}

/// The CONFIGURATION, FILES, ENVIRONMENT and EXIT STATUS sections of gitsync(1), in roff.
const MAN_EXTRA: &str = include_str!("man.roff");

fn io(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::failed(format!("{}: {e}", path.display()))
}

/// Writes the files. Exit code 0, or 1 when a file cannot be written.
pub fn run(args: &Args) -> Result<ExitCode, CliError> {
    let command = Cli::command();
    match &args.what {
        What::Man { dir } => {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            clap_mangen::generate_to(command.clone(), dir).map_err(io(dir))?;
            // The main page gets what --help cannot say: every configuration key, the
            // files, the environment and the exit codes.
            let main = dir.join("gitsync.1");
            let mut page = std::fs::read_to_string(&main).map_err(io(&main))?;
            page.push_str(MAN_EXTRA);
            std::fs::write(&main, page).map_err(io(&main))?;
            // Each subcommand's page gets the files, the environment and the exit codes too,
            // and points at gitsync(1) for the configuration; the hidden subcommands (what
            // gitsync and its hooks call) get no page.
            let common = MAN_EXTRA
                .find(".SH FILES")
                .map_or(MAN_EXTRA, |at| &MAN_EXTRA[at..]);
            for sub in command.get_subcommands() {
                let file = dir.join(format!("gitsync-{}.1", sub.get_name()));
                if sub.is_hide_set() {
                    let _ = std::fs::remove_file(&file);
                    continue;
                }
                let Ok(mut page) = std::fs::read_to_string(&file) else {
                    continue;
                };
                page.push_str(common);
                page.push_str(
                    ".SH SEE ALSO\n\\fBgitsync\\fR(1): every configuration key, and the other commands.\n",
                );
                std::fs::write(&file, page).map_err(io(&file))?;
            }
        }
        What::Completions { dir } => {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            for shell in [
                clap_complete::Shell::Bash,
                clap_complete::Shell::Zsh,
                clap_complete::Shell::Fish,
            ] {
                let file = dir.join(clap_complete::Generator::file_name(&shell, "gitsync"));
                std::fs::write(&file, super::completions::script(shell)).map_err(io(&file))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
