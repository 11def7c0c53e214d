//! A sweep's folder on the cluster, `<runs>/slurm/`: where the ledger, the lock, the scripts,
//! the task logs and exit statuses and the copy of the `breakeven` binary go, and reading what a
//! task left there.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::SlurmError;

/// The files of a sweep on the cluster.
#[derive(Debug, Clone)]
pub struct SweepFiles {
    pub dir: PathBuf,
}

impl SweepFiles {
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("slurm"),
        }
    }
    pub fn ledger(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn exits(&self) -> PathBuf {
        self.dir.join("exit")
    }
    /// A task's log (`sbatch --output=<logs>/%A_%a.log`).
    pub fn log(&self, job: &str, task: u32) -> PathBuf {
        self.logs().join(format!("{job}_{task}.log"))
    }
    /// The exit status a task wrote, if it exited by itself.
    pub fn exit_status(&self, job: &str, task: u32) -> Option<i32> {
        std::fs::read_to_string(self.exits().join(format!("{job}_{task}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// Where the tasks' copy of `bin` lives: `<runs>/slurm/bin/breakeven-<sha256 prefix>`. Tasks
/// run a copy named by its content, so rebuilding `breakeven` while a sweep is queued changes
/// nothing under it (a resumed run continues with the code that started it).
pub fn staged_binary(files: &SweepFiles, bin: &Path) -> Result<PathBuf, SlurmError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(bin).map_err(|e| SlurmError::io(bin, e))?;
    let hash = Sha256::digest(&bytes);
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    Ok(files.dir.join("bin").join(format!("breakeven-{hex}")))
}

/// Copies `bin` to its [`staged_binary`] path unless it is there already.
pub(crate) fn stage_binary(files: &SweepFiles, bin: &Path) -> Result<PathBuf, SlurmError> {
    let staged = staged_binary(files, bin)?;
    if !staged.is_file() {
        let dir = files.dir.join("bin");
        std::fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        let tmp = dir.join(".breakeven.tmp");
        std::fs::copy(bin, &tmp).map_err(|e| SlurmError::io(&tmp, e))?;
        std::fs::rename(&tmp, &staged).map_err(|e| SlurmError::io(&staged, e))?;
    }
    Ok(staged)
}

/// The error a run printed (`breakeven` prints `Error: …` and its causes, as `anyhow` does),
/// on one line; `None` if the log holds none.
pub fn error_in_log(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().rposition(|l| l.starts_with("Error: "))?;
    let mut parts = vec![lines[start]["Error: ".len()..].trim().to_string()];
    for l in &lines[start + 1..] {
        let t = l.trim();
        if t.starts_with("Stack backtrace:") || t.starts_with("breakeven: ") {
            break;
        }
        if t.is_empty() || t == "Caused by:" {
            continue;
        }
        // anyhow numbers several causes: `0: …`.
        let t = match t.split_once(": ") {
            Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
            _ => t,
        };
        parts.push(t.to_string());
    }
    let mut text = parts.join(": ");
    if text.chars().count() > 600 {
        text = text.chars().take(600).collect::<String>() + "…";
    }
    Some(text)
}

/// An exclusive lock on a sweep (`flock` on `<runs>/slurm/lock`), held while a command
/// submits and follows it; released when the command exits, however it exits.
#[derive(Debug)]
pub struct SweepLock {
    _file: File,
    pub path: PathBuf,
}

impl SweepLock {
    /// Takes the lock, or says that another command follows this sweep.
    pub fn acquire(path: &Path) -> Result<Self, SlurmError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| SlurmError::io(path, e))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor we own; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                return Err(SlurmError::Ledger {
                    path: path.to_path_buf(),
                    message: "another command is submitting or following this sweep; wait for \
                              it or stop it (its jobs keep running) and run this command again"
                        .into(),
                });
            }
        }
        Ok(Self {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SweepLock {
    /// Unlocks explicitly: closing the file alone leaves the lock held while a child process
    /// forked meanwhile (by any thread) still holds a copy of the descriptor, until it execs.
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor we own; no memory is shared.
            unsafe { libc::flock(self._file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_command_per_sweep_and_a_binary_copy_named_by_content() {
        let dir =
            std::env::temp_dir().join(format!("breakeven-slurm-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = SweepFiles::new(&dir);
        std::fs::create_dir_all(&files.dir).unwrap();
        let held = SweepLock::acquire(&files.lock()).unwrap();
        let e = SweepLock::acquire(&files.lock()).unwrap_err().to_string();
        assert!(e.contains("another command"), "{e}");
        drop(held);
        SweepLock::acquire(&files.lock()).unwrap();

        let bin = dir.join("breakeven");
        std::fs::write(&bin, b"one").unwrap();
        let a = stage_binary(&files, &bin).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert_eq!(staged_binary(&files, &bin).unwrap(), a);
        // A rebuild gets another copy; the first one stays for the tasks that use it.
        std::fs::write(&bin, b"two").unwrap();
        let b = stage_binary(&files, &bin).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
