//! Records the git commit the binary is built from (when built from a checkout), for the report's header.

fn main() {
    // A commit moves HEAD or the branch it names; rerun then (a missing path reruns every build, harmlessly).
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    if let Ok(out) = commit
        && out.status.success()
    {
        println!("cargo:rustc-env=VQGRAD_GIT_COMMIT={}", String::from_utf8_lossy(&out.stdout).trim());
    }
}
