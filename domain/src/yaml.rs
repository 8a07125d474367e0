//! YAML files as users write them (scenarios, rules): which files a list of
//! paths names, and errors that point at a line.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::de::DeserializeOwned;

/// Why a YAML file a user wrote (rules, scenarios) could not be loaded:
/// it could not be read, or it says something invalid at a line.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// The files `paths` name: files as given, folders as their `*.yaml` and
/// `*.yml` files in name order. A folder that cannot be read is returned
/// with the error.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|error| (path.clone(), error))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| {
                    file.extension()
                        .is_some_and(|ext| ext == "yaml" || ext == "yml")
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Reads `text`, or says at which line (from 1) and why not; the reason
/// names the field path and leaves the line to the caller.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, (usize, String)> {
    serde_yaml_ng::from_str(text).map_err(|error| {
        let line = error.location().map_or(1, |l| l.line());
        let message = error.to_string();
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        };
        (line, message)
    })
}

/// The index (from 0) of the first line at or after `from` that reads
/// `name: <wanted>` (as a list item or not, quoted or not, or first in a
/// flow mapping `{name: <wanted>, …}`): where a problem found after
/// parsing is reported.
pub fn name_line(text: &str, wanted: &str, from: usize) -> Option<usize> {
    key_line(text, "name", wanted, from)
}

/// As [`name_line`], for the line reading `<key>: <wanted>`.
pub fn key_line(text: &str, key: &str, wanted: &str, from: usize) -> Option<usize> {
    text.lines().enumerate().skip(from).find_map(|(i, line)| {
        let line = line.trim_start().trim_start_matches("- ").trim_start();
        let (line, flow) = match line.strip_prefix('{') {
            Some(inside) => (inside.trim_start(), true),
            None => (line, false),
        };
        let mut value = line.strip_prefix(key)?.strip_prefix(':')?.trim();
        if flow {
            value = value.split([',', '}']).next().unwrap_or("").trim();
        }
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (value == wanted).then_some(i)
    })
}

/// What changes when a file of `paths` does: paths, sizes and times. A
/// watcher compares two to know when to read the files again.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

pub fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut files = Vec::new();
    for path in paths {
        let entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => vec![path.clone()],
        };
        for file in entries {
            let meta = std::fs::metadata(&file).ok();
            files.push((
                file,
                meta.as_ref().map_or(0, std::fs::Metadata::len),
                meta.and_then(|m| m.modified().ok()),
            ));
        }
    }
    files.sort();
    files
}

/// Files watched for a change that has settled: one whose fingerprint
/// differs from the files' as last read, and stayed the same between two
/// looks. So a file written in steps (truncated, then written) is read once,
/// whole, not once per step.
#[derive(Debug)]
pub struct Watch {
    paths: Vec<PathBuf>,
    seen: Fingerprint,
    changing: Option<Fingerprint>,
}

impl Watch {
    /// Watches `paths`, as read now.
    pub fn new(paths: &[PathBuf]) -> Self {
        Watch {
            paths: paths.to_vec(),
            seen: fingerprint(paths),
            changing: None,
        }
    }

    /// Marks the files as read (call it just before reading them).
    pub fn read(&mut self) {
        self.seen = fingerprint(&self.paths);
        self.changing = None;
    }

    /// Whether the files changed since they were read, and have settled
    /// since the previous look.
    pub fn settled_change(&mut self) -> bool {
        let now = fingerprint(&self.paths);
        if now == self.seen {
            self.changing = None;
            return false;
        }
        let settled = self.changing.as_ref() == Some(&now);
        self.changing = Some(now);
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_found_in_block_and_flow_style() {
        let text =
            "rules:\n  - name: a\n  - {name: b, type: x}\n  - { name: \"c\" }\n  - name: 'd'\n";
        let lines: Vec<Option<usize>> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|name| name_line(text, name, 0))
            .collect();
        assert_eq!(lines, vec![Some(1), Some(2), Some(3), Some(4), None]);
        assert_eq!(name_line(text, "a", 2), None);
    }

    #[test]
    fn a_change_is_reported_once_it_has_settled() {
        let dir = std::env::temp_dir().join(format!("vigil-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.yaml");
        std::fs::write(&file, "a").unwrap();
        let mut watch = Watch::new(std::slice::from_ref(&file));
        assert!(!watch.settled_change());
        std::fs::write(&file, "").unwrap();
        assert!(!watch.settled_change(), "a first step of a write");
        std::fs::write(&file, "bbb").unwrap();
        assert!(!watch.settled_change(), "still changing");
        assert!(watch.settled_change(), "settled");
        watch.read();
        assert!(!watch.settled_change(), "read since");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
