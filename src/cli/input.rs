//! What `run`, `rerun` and `resume` read besides the workflow: trigger data, dotenv files, pinned
//! outputs and `--env` values. Each file must be a regular file (or `-` for stdin, for trigger
//! data only) under a documented size, refused at once otherwise: `/dev/zero` or a FIFO that
//! never ends is not read until memory runs out.

use super::Exit;
use super::exit::USAGE;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest trigger data accepted (`--input-file`, stdin).
pub const MAX_TRIGGER_BYTES: u64 = 256 << 20;
/// Largest `--env-file`.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;
/// Largest `--pin` file: the store's field limit, so a pinned output is stored whole (and a
/// resume can reuse it).
pub const MAX_PIN_BYTES: u64 = flowrun_store::DEFAULT_MAX_FIELD_BYTES as u64;

fn mib(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

fn too_large(what: &str, limit: u64) -> Exit {
    Exit::new(
        USAGE,
        format!("{what} is larger than the limit of {}", mib(limit)),
    )
}

/// Reads at most `limit` bytes from `r`; more is an error, not a cut.
fn read_limited(r: impl Read, limit: u64, what: &str, size_hint: usize) -> Result<Vec<u8>, Exit> {
    let mut buf = Vec::with_capacity(size_hint);
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Exit::new(USAGE, format!("cannot read {what}: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(too_large(what, limit));
    }
    Ok(buf)
}

/// The bytes of `path`, which must be a regular file of at most `limit` bytes. `what` names it
/// in messages (`--env-file .env`).
pub fn read_file(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, Exit> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Exit::new(USAGE, format!("cannot read {what}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Exit::new(USAGE, format!("cannot read {what}: {e}")))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let is = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(Exit::new(
            USAGE,
            format!("{what}: {} is {is}; give a regular file", path.display()),
        ));
    }
    if meta.len() > limit {
        return Err(too_large(
            &format!("{what} ({})", mib_or_bytes(meta.len())),
            limit,
        ));
    }
    read_limited(file, limit, what, meta.len() as usize)
}

fn mib_or_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// Trigger data from `--input JSON` or `--input-file F|-` as JSON text, with what gave it (for
/// messages); `None` when neither was given. Stdin is read only for `--input-file -`.
pub fn trigger_text(
    input: Option<&str>,
    input_file: Option<&Path>,
) -> Result<Option<(Vec<u8>, String)>, Exit> {
    if let Some(s) = input {
        return Ok(Some((s.as_bytes().to_vec(), "--input".into())));
    }
    let Some(f) = input_file else {
        return Ok(None);
    };
    if f.as_os_str() == "-" {
        let what = "the trigger data on stdin (--input-file -)";
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            flowrun_app::say!(
                "reading the trigger data (JSON) from the terminal; end it with Ctrl-D"
            );
        }
        let text = read_limited(std::io::stdin().lock(), MAX_TRIGGER_BYTES, what, 0)?;
        return Ok(Some((text, what.into())));
    }
    let what = format!("--input-file {}", f.display());
    let text = read_file(f, MAX_TRIGGER_BYTES, &what)?;
    Ok(Some((text, what)))
}

/// Parses a dotenv file: `KEY=value` lines, `#` comments, optional `export `, optional quotes.
pub fn parse_env_file(text: &str, file: &Path) -> Result<Vec<(String, String)>, Exit> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(Exit::new(
                USAGE,
                format!("{}:{}: expected KEY=VALUE", file.display(), i + 1),
            ));
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            if v.starts_with('"') {
                inner
                    .replace("\\n", "\n")
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            } else {
                inner.to_string()
            }
        } else {
            v.split(" #").next().unwrap_or(v).trim().to_string()
        };
        out.push((k.trim().to_string(), v));
    }
    Ok(out)
}

/// The variables of an `--env-file`.
pub fn env_file(f: &Path) -> Result<Vec<(String, String)>, Exit> {
    let what = format!("--env-file {}", f.display());
    let bytes = read_file(f, MAX_ENV_FILE_BYTES, &what)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Exit::new(USAGE, format!("{what}: not UTF-8 text")))?;
    parse_env_file(&text, f)
}

/// One `--env` argument: `KEY=VALUE`, or `KEY` for the value of KEY in flowrun's own
/// environment (so a secret need not be on the command line, where `ps` shows it). The flag
/// says which form it was: `true` for `KEY=VALUE`.
pub fn env_arg(arg: &str) -> Result<(String, String, bool), Exit> {
    if let Some((k, v)) = arg.split_once('=') {
        if k.is_empty() {
            return Err(Exit::new(
                USAGE,
                format!("--env {arg}: expected KEY=VALUE or KEY"),
            ));
        }
        return Ok((k.to_string(), v.to_string(), true));
    }
    match std::env::var(arg) {
        Ok(v) => Ok((arg.to_string(), v, false)),
        Err(std::env::VarError::NotPresent) => Err(Exit::new(
            USAGE,
            format!(
                "--env {arg}: {arg} is not set in flowrun's environment (give --env {arg}=VALUE, or set it)"
            ),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(Exit::new(
            USAGE,
            format!("--env {arg}: the value of {arg} in flowrun's environment is not UTF-8"),
        )),
    }
}

/// Variables for the workflow, `(name, value)` in order (the last of a name wins).
pub type EnvVars = Vec<(String, String)>;

/// The variables of `--env-file`s, then `--env`s, and the names whose last `--env` was
/// `KEY=VALUE` (a value on the command line).
pub fn env_values(
    env_files: &[std::path::PathBuf],
    env_args: &[String],
) -> Result<(EnvVars, Vec<String>), Exit> {
    let mut env = Vec::new();
    for f in env_files {
        env.extend(env_file(f)?);
    }
    let mut on_command_line = Vec::new();
    for arg in env_args {
        let (k, v, literal) = env_arg(arg)?;
        on_command_line.retain(|n| *n != k);
        if literal {
            on_command_line.push(k.clone());
        }
        env.push((k, v));
    }
    Ok((env, on_command_line))
}

/// A `--pin NODE=FILE`: the node and the JSON output in FILE.
pub fn pin(arg: &str) -> Result<(String, serde_json::Value), Exit> {
    let (node, file) = arg
        .split_once('=')
        .ok_or_else(|| Exit::new(USAGE, format!("--pin {arg}: expected NODE=FILE")))?;
    let what = format!("--pin {arg}");
    let bytes = read_file(Path::new(file), MAX_PIN_BYTES, &what)?;
    let output = flowrun_events::json::parse_bounded(&bytes, flowrun_events::json::MAX_DEPTH)
        .map_err(|e| Exit::new(USAGE, format!("{what}: {file} is not valid JSON: {e}")))?;
    Ok((node.to_string(), output))
}

/// Warns for each connection variable of `workflows` (what is about to run) whose secret was
/// given as `--env KEY=VALUE` (`on_command_line`), and so is on the command line, where any user
/// of the machine can read it (`ps`).
pub fn warn_secrets_on_command_line<'a>(
    workflows: impl IntoIterator<Item = &'a flowrun_codegen::Workflow>,
    on_command_line: &[String],
    env_file: bool,
) {
    let or_file = if env_file { " or --env-file FILE" } else { "" };
    let mut vars: Vec<&String> = workflows
        .into_iter()
        .flat_map(|w| w.connections.values().map(|c| &c.env))
        .filter(|v| on_command_line.contains(v))
        .collect();
    vars.sort();
    vars.dedup();
    for var in vars {
        flowrun_app::say!(
            "warning: --env {var}=… puts a secret on the command line, where any user of this machine can read it (ps); use --env {var} (its value from your environment){or_file}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_at_once() {
        let e = read_file(Path::new("/dev/zero"), 10, "--pin x=/dev/zero").unwrap_err();
        assert_eq!(e.code, USAGE);
        assert!(e.message.contains("is a device"), "{}", e.message);
        let e = read_file(Path::new("/"), 10, "--env-file /").unwrap_err();
        assert!(e.message.contains("is a directory"), "{}", e.message);
    }

    #[test]
    fn env_arg_forms() {
        assert_eq!(env_arg("A=b=c").unwrap(), ("A".into(), "b=c".into(), true));
        assert!(env_arg("=x").is_err());
        // PATH is set wherever tests run.
        let (k, v, literal) = env_arg("PATH").unwrap();
        assert_eq!((k.as_str(), literal), ("PATH", false));
        assert_eq!(v, std::env::var("PATH").unwrap());
        let e = env_arg("FLOWRUN_SURELY_UNSET_VARIABLE_42").unwrap_err();
        assert!(e.message.contains("is not set"), "{}", e.message);
    }
}
