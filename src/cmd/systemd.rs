//! Readiness for systemd (`Type=notify`): `fedgate run` says when it serves, reloads and
//! stops. Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use sd_notify::NotifyState;

/// Start-up is done: every side the config names is serving.
pub fn ready(instance: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("instance {instance} serving")),
    ]);
}

/// A SIGHUP reload begins; [`reloaded`] ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd 253 and newer expect the time the reload began beside RELOADING=1.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// The reload is over (whether or not the new policy loaded): serving again.
pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

/// The drain has begun: no new requests are taken.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "could not notify systemd (NOTIFY_SOCKET)");
    }
}
