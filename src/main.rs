//! The `gitsync` binary: parse the command line, run, map the result to an exit code.

#![warn(clippy::unwrap_used, clippy::expect_used)]

fn main() -> std::process::ExitCode {
    gitsync::cli::main()
}
