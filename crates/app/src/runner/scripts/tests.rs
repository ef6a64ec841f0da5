use super::*;

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn a_script_is_found_by_its_key_and_by_no_other() {
    let cache = tempfile::tempdir().unwrap();
    let path = write(cache.path(), Some("k1"), SHA, "print('hi')\n").unwrap();
    assert_eq!(path, cache.path().join(format!("scripts/{SHA}.py")));
    assert_eq!(cached(cache.path(), "k1"), Some(path.clone()));
    assert_eq!(cached(cache.path(), "k2"), None);
    // Written once: a second key for the same script links to the same file.
    write(cache.path(), Some("k2"), SHA, "print('hi')\n").unwrap();
    assert_eq!(cached(cache.path(), "k2"), Some(path.clone()));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "print('hi')\n");
}

#[test]
fn a_key_whose_script_is_gone_or_that_points_elsewhere_finds_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let path = write(cache.path(), Some("k"), SHA, "x = 1\n").unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(cached(cache.path(), "k"), None);
    // Whatever else a link in keys/ says, only `../<sha256>.py` is followed.
    let keys = cache.path().join("scripts/keys");
    let outside = cache.path().join("elsewhere.py");
    std::fs::write(&outside, "x = 2\n").unwrap();
    for (name, target) in [
        ("abs", outside.to_str().unwrap().to_string()),
        ("up", format!("../../{SHA}.py")),
        ("short", "../abc.py".to_string()),
        ("upper", format!("../{}.py", SHA.to_uppercase())),
    ] {
        std::os::unix::fs::symlink(&target, keys.join(name)).unwrap();
        assert_eq!(cached(cache.path(), name), None, "{target}");
    }
    // A script that is itself a link is not a script of ours.
    std::os::unix::fs::symlink(&outside, &path).unwrap();
    assert_eq!(cached(cache.path(), "k"), None);
}

#[test]
fn this_build_can_be_told_apart_so_its_runs_look_scripts_up() {
    let b = build().expect("the test binary's identity");
    assert!(b.starts_with(env!("CARGO_PKG_VERSION")), "{b}");
    assert_eq!(build(), Some(b));
}

#[test]
fn keys_whose_script_was_evicted_go_with_it() {
    let cache = tempfile::tempdir().unwrap();
    let path = write(cache.path(), Some("old"), SHA, "x = 1\n").unwrap();
    std::fs::remove_file(&path).unwrap();
    let other = "f".repeat(64);
    write(cache.path(), Some("new"), &other, "x = 2\n").unwrap();
    let keys = cache.path().join("scripts/keys");
    assert!(keys.join("new").symlink_metadata().is_ok());
    assert!(
        keys.join("old").symlink_metadata().is_err(),
        "a dangling key is removed"
    );
}
