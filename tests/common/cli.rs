//! Running the `agcam` binary from the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A file of `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Runs agcam; a run that takes over five minutes is killed and fails the test (a hang).
pub fn agcam(args: &[&str]) -> Output {
    let limit = Duration::from_secs(300);
    let mut child = Command::new(env!("CARGO_BIN_EXE_agcam"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agcam");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "agcam {args:?} still running after {limit:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// What a run printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `count` synthetic pictures (seed `seed`, VOC layout) to `dir/name` with `agcam synth`
/// and returns that folder.
pub fn synth_set(dir: &Path, name: &str, count: u32, seed: u64) -> PathBuf {
    let data = dir.join(name);
    let count = count.to_string();
    let seed = seed.to_string();
    let o = agcam(&[
        "synth",
        "--out",
        s(&data),
        "--count",
        &count,
        "--seed",
        &seed,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    data
}
