//! Starts the product's binaries (and re-runs a test binary) from a test the
//! way cargo started the test itself: through the target's runner when cargo
//! used one. Every test that spawns one of our binaries builds its
//! `Command` here.
//!
//! Why: for another architecture (`cargo test --target
//! aarch64-unknown-linux-musl`, or `cross test`), cargo runs each test binary
//! through a runner such as `qemu-aarch64-static`. A binary the test then
//! spawns is an aarch64 executable too, but qemu-user does not follow
//! `execve`: the host kernel gets it, and without a binfmt_misc entry for
//! aarch64 it fails with `Exec format error (os error 8)`. Running it through
//! the same runner needs no binfmt entry, and with one it changes nothing.
//!
//! Which runner: cargo does not tell the test. It takes the runner from
//! `CARGO_TARGET_<TRIPLE>_RUNNER` in its environment, else from
//! `target.<triple>.runner` in a config file. The environment form is the
//! one cross's images (the pinned ghcr.io/cross-rs ones and
//! `.ci/cross-image.sh`'s) set, and `.ci/firmware.sh` sets it for the
//! Docker-free path; a test inherits cargo's environment, so it sees the very
//! value cargo used, split on whitespace as cargo splits it. Nothing is
//! guessed: detecting qemu from inside the guest does not work reliably
//! (qemu-user shows the guest in `uname`, `/proc/self/exe` and
//! `/proc/self/maps`), and would miss runners that are not qemu itself, such
//! as cross-rs's `/qemu-runner aarch64` script or valgrind. A runner given
//! only in a config file is not visible here; with it the spawned binaries
//! run directly, as before (natively, or through binfmt_misc).
//!
//! `<TRIPLE>` is the target cargo built for, read from where it put our
//! binaries: `<target-dir>/<triple>/<profile>/` whenever `--target` is given
//! (cargo's documented build directory layout; cross always passes
//! `--target`). Without `--target` the path has no triple and no runner is
//! looked up.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command};

use rustix::process::{Pid, Signal, kill_process};

/// The target triple cargo built the binaries for, when `--target` was given.
pub fn target_triple() -> Option<&'static str> {
    let bin = Path::new(env!("CARGO_BIN_EXE_stratum-proxy"));
    let triple = bin.parent()?.parent()?.file_name()?.to_str()?;
    // A target triple has at least architecture and OS: `<arch>-<...>`.
    triple.contains('-').then_some(triple)
}

/// The environment variable cargo reads the runner for `triple` from.
pub fn runner_variable(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_RUNNER",
        triple.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// The runner cargo used for this test (program, then its arguments), if any.
pub fn runner() -> Option<Vec<String>> {
    let value = std::env::var(runner_variable(target_triple()?)).ok()?;
    let words: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    (!words.is_empty()).then_some(words)
}

/// A command that runs `program`, a binary built for the target under test,
/// through the runner when there is one.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    match runner() {
        Some(runner) => {
            let mut command = Command::new(&runner[0]);
            command.args(&runner[1..]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Sends `signal` to `child` (the runner's process when there is one: qemu-user
/// delivers it to the program it runs).
pub fn signal(child: &Child, signal: Signal) {
    kill_process(Pid::from_child(child), signal)
        .unwrap_or_else(|e| panic!("kill({}, {signal:?}): {e}", child.id()));
}
