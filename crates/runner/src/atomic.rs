//! Atomic file writes: write a sibling temporary file, fsync it, rename it over the target,
//! fsync the directory. A reader (or a resumed run after `kill -9`) sees the old or the new
//! file, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::RunError;

/// Replaces `path` by `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| RunError::io(path, e))
}

/// `dir/.name.tmp`: same directory so that the rename stays on one file system.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Makes the rename itself durable (POSIX: the directory entry lives in the directory).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `plot` as SVG to `svg_path` and as PNG beside it (same name, `.png`), both
/// atomically; returns the PNG's path. Every results page and `breakeven measure --slq` use it.
pub fn write_svg_and_png(
    svg_path: &Path,
    plot: &breakeven_plot::Plot,
) -> Result<PathBuf, RunError> {
    write_atomic(svg_path, plot.svg()?.as_bytes())?;
    let png_path = svg_path.with_extension("png");
    write_atomic(&png_path, &plot.png()?)?;
    Ok(png_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("breakeven-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "left over: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_plot_is_written_as_svg_and_png() {
        let dir = std::env::temp_dir().join(format!("breakeven-plotfiles-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let plot = breakeven_plot::line_chart(
            "t",
            "epoch",
            "loss",
            &[("a".into(), vec![(0.0, 1.0), (1.0, 0.5)])],
        );
        let png = write_svg_and_png(&dir.join("plot.svg"), &plot).unwrap();
        assert_eq!(png, dir.join("plot.png"));
        assert!(fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
        let svg = fs::read_to_string(dir.join("plot.svg")).unwrap();
        assert_eq!(svg, plot.svg().unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
