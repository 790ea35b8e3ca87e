//! Rules of the house that the compiler does not check.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_platform_imports_no_role() {
    let platform = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/platform");
    let files = rust_files(&platform);
    assert!(files.len() > 10, "found the platform's files");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            assert!(
                !code.contains("roles::")
                    && !code.contains("crate::roles")
                    && !code.contains("super::super::roles"),
                "{}:{}: the platform must not reach into a role: {line}",
                file.display(),
                number + 1
            );
        }
    }
}
