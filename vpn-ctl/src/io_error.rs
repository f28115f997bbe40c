//! An I/O error on a named path ("reading /sys/fs/bpf/vpn/wg0: ..."),
//! the one shape the controller's modules (cgroups, steering, the guard,
//! processes, forwarding) share for their file system errors.

use std::{
    io,
    path::{Path, PathBuf},
};

/// `{what} {path}`, with the I/O error as its source.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}")]
pub struct PathError {
    /// What was being done: "reading", "creating cgroup", ...
    pub what: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// For `map_err`: an I/O error while doing `what` on `path`.
pub fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PathError + 'a {
    move |source| PathError {
        what,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn says_what_and_where_and_keeps_the_cause() {
        let e = super::at("reading", std::path::Path::new("/x/y"))(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        ));
        assert_eq!(e.to_string(), "reading /x/y");
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some(std::io::Error::from(std::io::ErrorKind::NotFound).to_string())
        );
    }
}
