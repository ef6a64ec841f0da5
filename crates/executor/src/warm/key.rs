//! What one warm template serves, and what makes it stale: the key executions share a template
//! by, and the interpreter's fingerprint.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What one template serves: the interpreter and its flags (`-I`, `-S` when the workflow needs
/// no packages, `-u`), which together name the requirement set (a venv has its own interpreter),
/// and the variables of the execution's environment that are read as a process starts
/// ([`at_start`]), which the template is started with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub program: PathBuf,
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The variables of `env` that take effect as a process starts, before any code of the
/// execution runs: the dynamic loader's (`LD_LIBRARY_PATH`, `LD_PRELOAD`, …), libc's
/// (`GLIBC_TUNABLES`, `MALLOC_*`), the locale the interpreter sets up (`LANG`, `LC_*`: its
/// UTF-8 mode and the encoding of its streams), and OpenSSL's (`OPENSSL_CONF`,
/// `OPENSSL_MODULES`, …: read as libcrypto initialises, which is in the template when it
/// imports `ssl` for a workflow's HTTP or LLM nodes: a TLS policy given to an execution would
/// otherwise be its template's). A fork has its template's, whatever its own
/// environment says; so executions differing in these get different templates. Sorted, the
/// last value of a name given twice.
pub(crate) fn at_start(env: &[(String, String)]) -> Vec<(String, String)> {
    let read_at_start = |name: &str| {
        ["LD_", "LC_", "MALLOC_", "OPENSSL_"]
            .iter()
            .any(|p| name.starts_with(p))
            || [
                "LANG",
                "LANGUAGE",
                "GLIBC_TUNABLES",
                "LOCPATH",
                "GCONV_PATH",
            ]
            .contains(&name)
    };
    let kept: std::collections::BTreeMap<&str, &str> = env
        .iter()
        .filter(|(k, _)| read_at_start(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    kept.into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What makes a template stale when it changes: the interpreter file (a rebuilt venv has a new
/// one) and its `site-packages` directories (packages installed or removed).
pub(crate) fn fingerprint(program: &Path) -> Vec<(u64, Option<SystemTime>)> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .map(|m| (m.ino(), m.modified().ok()))
    };
    let mut out: Vec<_> = stamp(program).into_iter().collect();
    let lib = program
        .parent()
        .and_then(Path::parent)
        .map(|root| root.join("lib"));
    if let Some(Ok(entries)) = lib.map(std::fs::read_dir) {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("site-packages"))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        out.extend(dirs.iter().filter_map(|d| stamp(d)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::at_start;

    #[test]
    fn what_a_process_reads_as_it_starts_is_the_templates_key() {
        let env: Vec<(String, String)> = [
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("GROQ_API_KEY", "secret"),
            ("LD_LIBRARY_PATH", "/opt/lib"),
            ("LANG", "C.UTF-8"),
            ("MALLOC_ARENA_MAX", "2"),
            ("GLIBC_TUNABLES", "glibc.malloc.check=3"),
            ("LC_ALL", "POSIX"),
            ("HOME", "/root"),
            ("XLD_FOO", "no"),
            ("OPENSSL_CONF", "/etc/ssl/strict.cnf"),
            ("SSL_CERT_FILE", "/etc/ssl/ca.pem"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept = at_start(&env);
        let got: Vec<(&str, &str)> = kept.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("GLIBC_TUNABLES", "glibc.malloc.check=3"),
                ("LANG", "C.UTF-8"),
                ("LC_ALL", "POSIX"),
                ("LD_LIBRARY_PATH", "/opt/lib"),
                ("MALLOC_ARENA_MAX", "2"),
                ("OPENSSL_CONF", "/etc/ssl/strict.cnf"),
            ]
        );
    }
}
