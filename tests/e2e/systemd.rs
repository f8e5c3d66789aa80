//! Supervision as systemd runs the agent (`Type=notify`, `WatchdogSec=`): READY once it serves,
//! watchdog pings while it makes progress (also with the cloud unreachable: a restart would not
//! mend that), STOPPING on SIGTERM. The notify socket is a datagram socket of the test's own.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use wiko_e2e::{Agent, Camera, Process, bin, free_port};

fn messages(socket: &UnixDatagram, for_: Duration) -> Vec<String> {
    let until = Instant::now() + for_;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

#[test]
fn the_agent_notifies_ready_pings_the_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let agent_dir = dir.path().join("agent");
    let cam = Camera::synthetic("grind", "grinding", "WK-KN-200", 3, 1000, 200);
    // No cloud listens on this port: uploads fail and back off the whole time.
    Agent::write_config(&agent_dir, free_port(), free_port(), &[cam]).unwrap();
    let config = agent_dir.join("agent.toml");
    // systemd gives the watchdog to one PID: the shell's, which `exec env` hands to the agent.
    let script = format!(
        "exec env NOTIFY_SOCKET={} WATCHDOG_USEC=1500000 WATCHDOG_PID=$$ {} run --config {}",
        socket_path.display(),
        bin("wiko-agent").display(),
        config.display()
    );
    let mut agent = Process::program(
        std::path::Path::new("/bin/sh"),
        &["-c", &script],
        agent_dir.join("agent.log"),
    )
    .unwrap();

    let seen = messages(&socket, Duration::from_secs(5));
    let ready = seen
        .iter()
        .position(|m| m.contains("READY=1"))
        .unwrap_or_else(|| panic!("no READY in {seen:?}\n{}", agent.log_text()));
    assert!(seen[ready].contains("STATUS=1 cameras"), "{seen:?}");
    let pings = seen[ready..]
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    // Every half second (a third of 1.5 s) for about 5 s, the cloud unreachable throughout.
    assert!(pings >= 5, "{pings} pings: {seen:?}\n{}", agent.log_text());
    assert!(agent.log_text().contains("backing off"));

    agent.terminate().unwrap();
    let after = messages(&socket, Duration::from_millis(500));
    assert!(
        seen.iter().chain(&after).any(|m| m.contains("STOPPING=1")),
        "{after:?}"
    );
}
