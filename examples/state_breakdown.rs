//! Where the time of one state read goes (developer aid, not a benchmark figure):
//! `cargo run --release --example state_breakdown -- DIR_WITH_REPOS`.
use std::time::Instant;

fn main() {
    let root = std::env::args().nth(1).expect("folder of repositories");
    let repos = gitsync::discover::walk(std::path::Path::new(&root));
    let mut t_open = 0.0;
    let mut t_status = 0.0;
    let mut t_status_no_tree = 0.0;
    let mut t_status_no_untracked = 0.0;
    let mut t_full = 0.0;
    for repo in &repos {
        let t = Instant::now();
        let r = gix::open(&repo.path).expect("open");
        t_open += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let n = r
            .status(gix::progress::Discard)
            .expect("s")
            .into_iter(Vec::<gix::bstr::BString>::new())
            .expect("i")
            .count();
        t_status += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = r
            .status(gix::progress::Discard)
            .expect("s")
            .index_worktree_submodules(gix::status::Submodule::Given {
                ignore: gix::submodule::config::Ignore::All,
                check_dirty: false,
            })
            .into_index_worktree_iter(Vec::<gix::bstr::BString>::new())
            .expect("i")
            .count();
        t_status_no_tree += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = r
            .status(gix::progress::Discard)
            .expect("s")
            .untracked_files(gix::status::UntrackedFiles::None)
            .into_iter(Vec::<gix::bstr::BString>::new())
            .expect("i")
            .count();
        t_status_no_untracked += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = gitsync::git::state::read("h", &repo.name, &repo.path);
        t_full += t.elapsed().as_secs_f64();
        let _ = n;
    }
    let k = 1000.0 / repos.len() as f64;
    println!(
        "per repo ms: open {:.3} status {:.3} status(null tree) {:.3} status(no untracked) {:.3} full read {:.3}",
        t_open * k,
        t_status * k,
        t_status_no_tree * k,
        t_status_no_untracked * k,
        t_full * k
    );
}
