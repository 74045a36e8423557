//! The TypeScript and Python client packages (`clients/`), tested by their
//! own test suites against this build's `keyward` binary, so that `cargo
//! test` runs them too. Each suite starts its own `keyward serve` on port 0
//! with a fresh SQLite file (and restarts it for the resume test).
//!
//! Dependencies come from the lockfiles: `npm ci` when `node_modules` is
//! missing or older than `package-lock.json`; a virtualenv under the target
//! directory, (re)installed with `pip install -r requirements.lock` when
//! missing or older than the lock. Without Node.js or Python the tests say
//! so and pass, unless `CI` is set: then they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::helpers::running_in_ci;

fn clients_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Whether `program --version` runs; otherwise skip (or fail in CI).
fn available(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            !running_in_ci(),
            "`{program}` is needed to test clients/{package} (CI is set, so this fails instead of skipping)"
        );
        eprintln!("SKIPPED: clients/{package} tests: `{program}` not found on PATH");
    }
    found
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// Whether `installed` is missing or older than `lock`.
fn stale(installed: &Path, lock: &Path) -> bool {
    match (modified(installed), modified(lock)) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

/// Runs `command`, showing its output only when it fails.
fn run(what: &str, command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn typescript_package_tests_pass_against_this_keyward() {
    let dir = clients_dir("typescript");
    if !available("node", "typescript") || !available("npm", "typescript") {
        return;
    }
    // npm writes node_modules/.package-lock.json on every install.
    if stale(
        &dir.join("node_modules/.package-lock.json"),
        &dir.join("package-lock.json"),
    ) {
        run(
            "npm ci",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
        );
    }
    run(
        "npm test (clients/typescript)",
        Command::new("npm")
            .arg("test")
            .current_dir(&dir)
            .env("KEYWARD_BIN", env!("CARGO_BIN_EXE_keyward")),
    );
}

#[test]
fn python_package_tests_pass_against_this_keyward() {
    let dir = clients_dir("python");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !available(&python, "python") {
        return;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyward-python-client-venv");
    let venv_python = venv.join("bin/python");
    let installed = venv.join("installed.stamp");
    let lock = dir.join("requirements.lock");
    if !venv_python.exists() {
        run(
            "python3 -m venv",
            Command::new(&python).arg("-m").arg("venv").arg(&venv),
        );
    }
    if stale(&installed, &lock) {
        run(
            "pip install -r requirements.lock",
            Command::new(&venv_python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&lock),
        );
        std::fs::write(&installed, b"").unwrap();
    }
    run(
        "pytest (clients/python)",
        Command::new(&venv_python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&dir)
            .env("KEYWARD_BIN", env!("CARGO_BIN_EXE_keyward")),
    );
}
