//! What a warm template and the runner say on their socket: one JSON message per
//! `SOCK_SEQPACKET` packet, descriptors attached (`SCM_RIGHTS`); `runtime/warm/serve.py` is the
//! other side.

use nix::sys::socket::MsgFlags;
use serde_json::Value;
use std::os::fd::{OwnedFd, RawFd};

/// Sends a message without descriptors, never waiting (a template that is busy or gone does
/// not get it): whether it went.
pub(super) fn send_now(fd: RawFd, msg: &Value) -> bool {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    nix::sys::socket::send(fd, msg.to_string().as_bytes(), flags).is_ok()
}

/// One message from a template's socket (`fd`), with its descriptors (close-on-exec).
pub(super) fn receive_from(fd: RawFd) -> std::io::Result<(Value, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 16 << 10];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), flags)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: descriptors the kernel just gave us, owned from here on.
            fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the warm template is gone",
        ));
    }
    let v = serde_json::from_slice(&buf[..n])
        .map_err(|e| std::io::Error::other(format!("the warm template said nonsense: {e}")))?;
    Ok((v, fds))
}

/// What the template says on its socket.
pub(super) enum Message {
    /// `{"seq", "pid"}` or `{"seq", "error"}`: the answer to request `seq`.
    Answer(i64, Option<i32>),
    /// `{"spare": W, "scripts": […]}` with W's socket and its [`Handle`]'s descriptors: it made
    /// a spare.
    Spare(i32),
    Other,
}

impl Message {
    pub(super) fn of(v: &Value) -> Message {
        let pid = |k: &str| {
            v.get(k)
                .and_then(Value::as_i64)
                .filter(|&p| p > 0 && p <= i64::from(i32::MAX))
                .map(|p| p as i32)
        };
        if let Some(p) = pid("spare") {
            Message::Spare(p)
        } else if let Some(seq) = v.get("seq").and_then(Value::as_i64) {
            Message::Answer(seq, pid("pid"))
        } else {
            Message::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Message;
    use serde_json::json;

    /// A template changed beyond what it can undo answers without `seq` (runtime/warm/serve.py,
    /// `_Retire`): taken as broken, so it is retired and the execution starts cold.
    #[test]
    fn an_answer_without_its_seq_is_no_answer() {
        assert!(matches!(
            Message::of(&json!({"retire": "x"})),
            Message::Other
        ));
        assert!(matches!(
            Message::of(&json!({"seq": 1, "error": "x"})),
            Message::Answer(1, None)
        ));
    }
}
