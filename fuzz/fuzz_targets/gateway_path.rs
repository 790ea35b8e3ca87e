//! The gateway's path normalisation: `roles::gateway::path::canonical`. Besides not panicking,
//! checks the module's promises: the canonical form is canonical (canonicalising twice changes
//! nothing) and, for a path starting with '/' (every request path), holds no empty, `.` or `..` segment, no backslash and no encoded separator.
#![no_main]

use fountain::roles::gateway::path::canonical;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if !path.starts_with('/') {
        // `HttpRequest::path()` always starts with '/'; others come back unchanged by design
        // (`remove_dot_segments`): only check that nothing panics.
        let _ = canonical(path);
        return;
    }
    let Ok(once) = canonical(path) else { return };
    let twice = canonical(&once);
    assert_eq!(twice.as_deref().ok(), Some(&*once), "canonical is not idempotent on {path:?} -> {once:?}");
    assert!(!once.contains('\\'), "backslash in {once:?} from {path:?}");
    let upper = once.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(bad), "{bad} in {once:?} from {path:?}");
    }
    for (i, segment) in once.split('/').enumerate() {
        if i == 0 {
            continue;
        }
        assert!(segment != "." && segment != "..", "dot segment in {once:?} from {path:?}");
    }
});
