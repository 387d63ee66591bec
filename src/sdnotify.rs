//! systemd service notifications (`sd_notify`) with std only.
//!
//! With `Type=notify`, systemd passes a datagram socket in `NOTIFY_SOCKET`
//! (a path, or `@name` for an abstract socket) and waits for `READY=1`.
//! `STOPPING=1` says shutdown has begun; with `WatchdogSec=` the service must
//! send `WATCHDOG=1` more often than `WATCHDOG_USEC` (we use half of it).
//! Outside systemd `NOTIFY_SOCKET` is unset and every call is a no-op that
//! returns `Ok(false)`.
//!
//! The public functions read the process environment; the `*_from`
//! functions take the values as parameters so tests never touch (and race
//! on) the process environment.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Environment variable naming the notification socket.
pub const NOTIFY_SOCKET_VAR: &str = "NOTIFY_SOCKET";
/// Environment variable holding the watchdog timeout in microseconds.
pub const WATCHDOG_USEC_VAR: &str = "WATCHDOG_USEC";
/// Environment variable naming the process the watchdog applies to.
pub const WATCHDOG_PID_VAR: &str = "WATCHDOG_PID";

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the socket
/// in `NOTIFY_SOCKET`. `Ok(false)` when it is unset or empty.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_to(std::env::var_os(NOTIFY_SOCKET_VAR).as_deref(), state)
}

/// Sends `state` to the notification socket `socket` (a path, or `@name`
/// for an abstract socket). `Ok(false)` when `socket` is `None` or empty.
pub fn notify_to(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let sender = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sender.send_to_addr(state.as_bytes(), &address)?
    } else if bytes.first() == Some(&b'/') {
        sender.send_to(state.as_bytes(), socket)?
    } else {
        // systemd also knows vsock: addresses (for VMs); we are never run so.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported NOTIFY_SOCKET address {:?}", socket),
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification datagram was truncated",
        ));
    }
    Ok(true)
}

/// Tells systemd start-up is complete (`READY=1`): call once listening.
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// Tells systemd shutdown has begun (`STOPPING=1`).
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// Keeps the watchdog from firing (`WATCHDOG=1`).
pub fn watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// Sets the one-line status `systemctl status` shows (`STATUS=...`).
pub fn status(text: &str) -> io::Result<bool> {
    notify(&status_message(text))
}

/// `STATUS=<text>` with line breaks turned into spaces: a newline would end
/// the assignment and start another.
fn status_message(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

/// How often to send [`watchdog`]: half of `WATCHDOG_USEC`, or `None` when
/// the watchdog is off or meant for another process (`WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var(WATCHDOG_USEC_VAR).ok();
    let pid = std::env::var(WATCHDOG_PID_VAR).ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from explicit values of `WATCHDOG_USEC`,
/// `WATCHDOG_PID` and our process id.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        // An unparsable pid cannot be ours either.
        if pid.parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sdnotify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_receives_ready_and_status() {
        let dir = temp_dir("path");
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1").unwrap());
        assert_eq!(receive(&receiver), "READY=1");
        let message = status_message("draining\n3 open");
        assert!(notify_to(Some(path.as_os_str()), &message).unwrap());
        assert_eq!(receive(&receiver), "STATUS=draining 3 open");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_socket_receives_stopping() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("stratum-proxy-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let target = format!("@{name}");
        assert!(notify_to(Some(OsStr::new(&target)), "STOPPING=1").unwrap());
        assert_eq!(receive(&receiver), "STOPPING=1");
    }

    #[test]
    fn unset_socket_is_a_no_op() {
        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(OsStr::new("")), "READY=1").unwrap());
    }

    #[test]
    fn missing_or_odd_socket_is_an_error() {
        let dir = temp_dir("missing");
        let path = dir.join("nobody-listens.sock");
        assert!(notify_to(Some(path.as_os_str()), "READY=1").is_err());
        assert_eq!(
            notify_to(Some(OsStr::new("vsock:2:1234")), "READY=1")
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout() {
        assert_eq!(
            watchdog_interval_from(Some("20000000"), None, 42),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_interval_from(Some("3000"), Some("42"), 42),
            Some(Duration::from_micros(1500))
        );
    }

    #[test]
    fn watchdog_interval_off_cases() {
        assert_eq!(watchdog_interval_from(None, None, 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("abc"), None, 42), None);
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("41"), 42),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("x"), 42),
            None
        );
    }
}
