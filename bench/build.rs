//! Records the git revision the bench was built from, for summary.json.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let revision = match git(&["rev-parse", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=STRAND_GIT_REVISION={revision}");
    // Rerun when the checked-out commit, the index or any workspace source changes, so
    // that the `-dirty` mark follows local edits (cargo watches directories
    // recursively).
    for path in [
        "../.git/HEAD",
        "../.git/index",
        "src",
        "../engine/src",
        "../node/src",
        "../net/src",
        "../tools/src",
    ] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
