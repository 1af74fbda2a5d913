//! What the benches share: a multi-threaded tokio runtime and a fresh data
//! directory.

/// A multi-threaded tokio runtime and a temporary directory (removed on drop).
pub fn runtime_and_dir() -> (tokio::runtime::Runtime, tempfile::TempDir) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    (rt, tempfile::tempdir().unwrap())
}
