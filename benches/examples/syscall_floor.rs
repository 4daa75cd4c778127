//! What the machine charges for a system call: a call that does nothing (`getppid`) and a
//! 45-byte `pwrite` (a one-event append's frame) into a preallocated file, one after another,
//! with and without a second thread in the process (the kernel then takes a reference to the
//! file on each call). A one-event append cannot be cheaper than the `pwrite`.
//!
//! `cargo run --release -p tokenboard-benches --example syscall_floor [calls]`

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn per_call(n: u64, mut f: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n: u64 = std::env::args().nth(1).map_or(1_000_000, |a| a.parse().expect("calls: a whole number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.path().join("floor")).expect("file");
    let frame = [7u8; 45];
    let bytes = (n * frame.len() as u64) as libc::off_t;
    // SAFETY: a plain system call on a file descriptor this function owns.
    assert_eq!(unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes) }, 0, "fallocate");
    let measure = |label: &str| {
        let getppid = per_call(n, |_| {
            std::hint::black_box(std::os::unix::process::parent_id());
        });
        let pwrite = per_call(n, |i| file.write_all_at(&frame, i * frame.len() as u64).expect("pwrite"));
        println!("{label}: getppid {getppid:.0} ns, 45-byte pwrite {pwrite:.0} ns per call");
    };
    measure("one thread");
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let idle = std::thread::spawn(move || stop_rx.recv().ok());
    measure("with a second thread");
    drop(stop_tx);
    idle.join().expect("idle thread");
}
