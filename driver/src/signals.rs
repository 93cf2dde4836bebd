//! SIGTERM and SIGINT as flags the long-running commands poll: a scheduler finishes its window,
//! an EMR run terminates the cluster it started, instead of dying with work half done.

use std::sync::atomic::{AtomicBool, Ordering};

static TERMINATE: AtomicBool = AtomicBool::new(false);
static INTERRUPT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGINT {
        INTERRUPT.store(true, Ordering::SeqCst);
    } else {
        TERMINATE.store(true, Ordering::SeqCst);
    }
}

/// Routes SIGTERM and SIGINT to the flags below (instead of ending the process).
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// SIGTERM or SIGINT arrived: stop at the next safe point.
pub fn stop_requested() -> bool {
    TERMINATE.load(Ordering::SeqCst) || INTERRUPT.load(Ordering::SeqCst)
}

/// SIGINT (Ctrl-C) arrived: the user wants out now.
pub fn interrupted() -> bool {
    INTERRUPT.load(Ordering::SeqCst)
}
